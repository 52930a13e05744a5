"""``tether verify guard``: certified accuracy curves of a trained guard's head, beside an attack's, and its
properties exported for other verifiers and checked again independently.

Reads a guard (``tether guard train``'s ``OUT/guard``; a ``static`` or ``embedding`` model, logistic or with a
ReLU hidden layer), labelled rows (the world's held-out split by default, or JSONL files), and writes
``OUT/certify.json``:

- ``feature``: per epsilon (L-infinity in the unit-length feature space), clean accuracy, certified accuracy by
  IBP and by CROWN, and accuracy under a PGD attack (:func:`tether.verify.certify.feature_curve`);
- ``substitution``: per swap budget, certified accuracy and accuracy under the greedy swap attack
  (:func:`tether.verify.certify.substitution_curve`);
- ``exported``: the first ``export`` rows' properties at ``export_epsilon`` written as ONNX + VNN-LIB under
  ``OUT/properties/`` and decided by the exact MILP check (:func:`tether.verify.export.check`), beside what
  CROWN said of each: a certified property the MILP found reachable would be an error, and raises.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.guard.classifier import EmbeddingModel, StaticModel, TrainedGuard, head_hidden, head_layers
from tether.guard.evaluate import read_guard_rows
from tether.verify.bounds import crown, linf_box
from tether.verify.certify import CertificateError, feature_curve, static_box, substitution_curve
from tether.verify.export import check, write_onnx, write_vnnlib
from tether.verify.substitutions import load_synonyms

WORLD = "world"


class VerifyGuardConfig(Config):
    """``tether verify guard``."""

    guard: str = Field(description="a guard directory (tether guard train's OUT/guard) or the run directory above it")
    data: list[str] = Field(default_factory=lambda: [WORLD], description="labelled JSONL files (text, label), or "
                            "'world': the world's held-out guard rows")
    world_seed: int = 0
    n: int | None = Field(300, ge=2, description="rows used at most (a stratified sample; None: all)")
    epsilons: list[float] = Field(default_factory=lambda: [0.0, 0.0025, 0.005, 0.01, 0.02, 0.04],
                                  description="L-infinity radii in feature space")
    budgets: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], description="word swaps an attacker may make")
    synonyms: str | None = Field(None, description="JSON or YAML: {word: [substitute, ...]}, added to the built-in "
                                 "look-alike, leetspeak, typo and case swaps")
    export: int = Field(5, ge=0, description="properties exported as ONNX + VNN-LIB and checked by the exact MILP")
    export_epsilon: float | None = Field(None, ge=0.0, description="their radius (default: the middle epsilon)")
    attack_steps: int = Field(40, ge=1, description="PGD steps per restart")
    seed: int = 0
    out: str = Field("runs/verify-guard", description="run directory")


def _rows(cfg: VerifyGuardConfig) -> list[tuple[str, bool]]:
    rows: list[tuple[str, bool]] = []
    for source in cfg.data:
        if source == WORLD:
            from tether.world.datasets import guard_rows
            from tether.world.spec import WorldConfig, build_world

            world = build_world(WorldConfig(seed=cfg.world_seed))
            rows += [(r["text"], bool(r["label"])) for r in guard_rows(world, "heldout", n=400, seed=cfg.seed)]
        else:
            rows += [(r.text, r.label) for r in read_guard_rows(source)]
    unique = list(dict.fromkeys(rows))
    if cfg.n is None or len(unique) <= cfg.n:
        return unique
    rng = random.Random(cfg.seed)  # stratified: each label keeps its share
    out: list[tuple[str, bool]] = []
    for label in (True, False):
        group = [r for r in unique if r[1] is label]
        rng.shuffle(group)
        out += group[:round(cfg.n * len(group) / len(unique))]
    return out


def _guard_dir(path: str) -> Path:
    found = Path(path)
    if (found / "guard" / "guard.json").is_file():
        found = found / "guard"
    if not (found / "guard.json").is_file():
        raise UserError(f"{path}: not a guard directory (no guard.json; tether guard train writes OUT/guard)")
    return found


def run(cfg: VerifyGuardConfig, *, resume: bool = False) -> dict[str, Any]:
    """Certify, attack, export and check; the document also written to ``OUT/certify.json``."""
    seed_everything(cfg.seed)
    guard_dir = _guard_dir(cfg.guard)
    run_dir = RunDir(cfg.out, command="verify guard", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _verify(cfg, guard_dir, rd))


def _verify(cfg: VerifyGuardConfig, guard_dir: Path, run_dir: RunDir) -> dict[str, Any]:
    trained = TrainedGuard.load(guard_dir)
    model = trained.model
    if not isinstance(model, StaticModel | EmbeddingModel):
        raise UserError(f"{guard_dir}: a {model.kind} guard; tether verify certifies static and embedding heads "
                        "(the networks over frozen features)")
    layers = head_layers(model.head)
    decision = min(max(trained.thresholds.decision, 1e-12), 1 - 1e-12)  # a threshold of 0 or 1 has no logit
    threshold = math.log(decision / (1 - decision))  # the decision on the logit
    rows = _rows(cfg)
    texts = [t for t, _ in rows]
    with torch.no_grad():
        features, owner = model.pooled(texts) if isinstance(model, StaticModel) else model.embed(texts)
    single = [i for i in range(len(rows)) if owner.count(i) == 1]  # texts read in one window
    first = {o: j for j, o in reversed(list(enumerate(owner)))}
    kept = [rows[i] for i in single]
    x = features[[first[i] for i in single]].float()
    labels = torch.tensor([float(label) for _, label in kept])

    feature = feature_curve(layers, x, labels, threshold, cfg.epsilons, attack_steps=cfg.attack_steps)

    def logits(batch: list[str]) -> list[float]:
        with torch.no_grad():
            vectors, own = model.pooled(batch) if isinstance(model, StaticModel) else model.embed(batch)
            values = torch.nn.Sequential(*layers)(vectors.float()).squeeze(-1).tolist()
        worst: dict[int, float] = {}
        for value, o in zip(values, own, strict=True):  # the worst window, as the guard scores a text
            worst[o] = max(worst.get(o, -math.inf), value)
        return [worst[i] for i in range(len(batch))]

    synonyms = load_synonyms(cfg.synonyms)
    box = (lambda slots, budget: static_box(model, slots, budget)) if isinstance(model, StaticModel) else None
    substitution = substitution_curve(kept, logits, threshold, cfg.budgets, layers=layers, box=box,
                                      synonyms=synonyms)

    exported = _export(cfg, layers, x, labels, threshold, run_dir.path / "properties")
    data = [f"world:seed={cfg.world_seed}" if d == WORLD else d for d in cfg.data]
    doc = {"guard": str(guard_dir), "model": model.kind, "hidden": head_hidden(model.head),
           "threshold_logit": round(threshold, 6), "rows": len(kept), "rows_in_several_windows": len(rows) - len(kept),
           "positives": int(labels.sum()), "data": data,
           "feature": feature, "substitution": substitution, "exported": exported}
    (run_dir.path / "certify.json").write_text(json.dumps(doc, indent=2) + "\n")
    run_dir.add_output("certify", run_dir.path / "certify.json")
    return doc


def _export(cfg: VerifyGuardConfig, layers: list[torch.nn.Module], x: torch.Tensor, labels: torch.Tensor,
            threshold: float, where: Path) -> dict[str, Any]:
    if cfg.export == 0:
        return {"n": 0}
    epsilon = cfg.export_epsilon if cfg.export_epsilon is not None else sorted(cfg.epsilons)[len(cfg.epsilons) // 2]
    where.mkdir(parents=True, exist_ok=True)
    onnx_path = write_onnx(layers, where / "head.onnx")
    lower, upper = linf_box(x[:cfg.export], epsilon)
    with torch.no_grad():
        lo, hi = crown(layers, lower, upper)
    checks: list[dict[str, Any]] = []
    for i in range(min(cfg.export, len(x))):
        label = bool(labels[i])
        prop = write_vnnlib(where / f"prop_{i}.vnnlib", lower[i].tolist(), upper[i].tolist(), label=label,
                            threshold=threshold)
        result = check(onnx_path, prop)
        by_crown = bool(lo[i, 0] > threshold) if label else bool(hi[i, 0] < threshold)
        if by_crown and result.status == "sat":
            raise CertificateError(f"{prop.name}: CROWN certified it, the exact check found a counterexample")
        checks.append({"property": prop.name, "label": label, "crown": "certified" if by_crown else "unknown",
                       "crown_bounds": [round(float(lo[i, 0]), 6), round(float(hi[i, 0]), 6)], **result.as_dict()})
    return {"n": len(checks), "epsilon": epsilon, "onnx": "properties/head.onnx", "checker": "exact MILP (HiGHS)",
            "agree": sum((c["crown"] == "certified") <= (c["status"] == "unsat") for c in checks),
            "checks": checks}

