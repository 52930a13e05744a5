"""Adversarial training: attack -> train on what got through -> attack again, measuring each round on
attack kinds the training never saw, next to the over-refusal it cost.

Round 0 measures the starting model (``start``: a recipe that makes it from ``model``, e.g. the world's
helpful-only SFT; null: ``model`` itself). Each round r = 1..``rounds`` then:

1. **exports** the successful attacks of the training attack run (``attack``: its kinds, its goals) on
   every earlier round's model — all rounds so far, so earlier failures are replayed — as SFT
   conversations whose reply is the safe one (:mod:`tether.redteam.export`); kinds that any held-out
   measurement uses are never exported, whatever the attack config lists;
2. **mixes** them with helpful demonstrations (``helpful_data``) so adversarial rows are
   ``adversarial_fraction`` of the training set (repeated when there are few): refusing every
   attacked request is easy; refusing them while still answering the benign requests that resemble
   them is the point;
3. **trains** the previous round's model on the mix (``train``: an SFT config, ``steps_per_round``);
4. **measures** the new model: the training attack run again (the next round's data), every
   ``heldout`` measurement (held-out attack kinds; each run ``repeats`` times with different seeds and
   pooled, the interval a bootstrap over goals), and the ``evaluation`` (over-refusal and the rest).

A **control** (``control``, on by default) trains the same steps each round on the same helpful rows
without the adversarial ones and is measured the same way, so a fall in held-out attack success can be
told apart from what further SFT does on its own. A config whose attack lists a held-out kind is
refused: held-out kinds are never trained on.

Every step is a run in its own directory under ``out`` (``--resume`` skips the finished ones and resumes
the one that was interrupted); ``adversarial.json`` holds every round's figures and ``adversarial.png`` plots
held-out ASR next to over-refusal by round.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from tether.core.config import Config, load_config
from tether.core.errors import ConfigError, UserError
from tether.core.recipes import RECIPES, output, recipe
from tether.core.runs import RunDir, read_metrics, run_stage
from tether.core.stats import bootstrap_mean
from tether.data.io import jsonl_objects, write_jsonl
from tether.pipelines.stages import Stage, evaluated

ADVERSARIAL_HEADLINE = ("harmless.harmful_compliance", "harmless.over_refusal",
                        "harmless.harmful_compliance.heldout_items", "harmless.harmful_compliance.heldout_wrappers",
                        "honest.sycophancy", "honest.hallucination", "corrigible.resistance", "helpful.task_accuracy",
                        "format.malformed")


class Measurement(Stage):
    """A red-team config measured every round (held-out attack kinds), run ``repeats`` times and pooled."""

    name: str = Field(description="the measurement's name in results")
    repeats: int = Field(3, ge=1, description="runs with different seeds (new sampled replies, new many-shot "
                         "shots), pooled")


class AdversarialConfig(Config):
    """``tether redteam adversarial``: rounds of attack -> train -> re-attack."""

    model: str = Field("world:base", description="the model to start from (a directory, world:base, tiny:ARCH)")
    start: Stage | None = Field(None, description="an SFT config run on ``model`` first (the starting point "
                                "round 0 measures); null: start from ``model`` as it is")
    attack: Stage = Field(description="the red-team config whose successful attacks are trained on")
    heldout: list[Measurement] = Field(min_length=1, description="red-team configs of held-out attack kinds, "
                                       "measured every round and never trained on")
    train: Stage = Field(description="the SFT config each round trains with (its model and data are set here)")
    helpful_data: str | None = Field(None, description="demonstrations mixed into every round's training "
                                     "(JSONL, datasets directory, builtin:NAME); null: adversarial rows only")
    adversarial_fraction: float = Field(0.25, gt=0.0, lt=1.0,
                                        description="share of adversarial rows in each round's training set "
                                        "(with helpful_data; without it, they are the whole set)")
    refusal: str = Field("I can't help with that.", description="the safe reply to a non-world goal ({request})")
    rounds: int = Field(2, ge=1, description="attack -> train rounds after round 0")
    steps_per_round: int = Field(40, ge=1, description="optimizer steps each round trains")
    evaluation: Stage | None = Field(None, description="an eval config measured every round (null: none)")
    control: bool = Field(True, description="also train a control each round: the same steps on the same "
                          "helpful rows without the adversarial ones, measured the same way (what training "
                          "alone does to the held-out kinds)")
    over_refusal_metric: str = Field("harmless.over_refusal", description="the evaluation's over-refusal metric")
    out: str = Field("runs/adversarial", description="pipeline directory")
    seed: int = Field(0, description="seeds every stage")

    @field_validator("heldout")
    @classmethod
    def _names_differ(cls, value: list[Measurement]) -> list[Measurement]:
        names = [m.name for m in value]
        if len(set(names)) != len(names):
            raise ValueError(f"heldout measurement names repeat: {names}")
        return value


def _final_model(cfg: AdversarialConfig) -> Path:
    return Path(cfg.out) / f"round-{cfg.rounds}" / "train" / "model"


def summary_lines(cfg: AdversarialConfig, results: dict[str, Any]) -> list[str]:
    """One line per round: its new examples and every held-out / training-kind rate with its interval."""
    lines = []
    for row in results["table"]:
        cells = "  ".join(f"{k}={100 * v['value']:.1f}% [{100 * v['ci_low']:.1f}-{100 * v['ci_high']:.1f}]"
                          for k, v in row.items() if isinstance(v, dict))
        lines.append(f"round {row['round']} (+{row['new_examples']} examples)  {cells}")
    return [*lines, f"results: {cfg.out}/adversarial.json   plot: {cfg.out}/adversarial.png"]


@recipe("adversarial", group="redteam", config=AdversarialConfig,
        summary="Adversarial training: rounds of attack -> train on the successful attacks (with helpful data) -> "
        "attack again; per round, ASR on held-out attack kinds next to over-refusal.",
        example="tether redteam adversarial --config adversarial/world --out runs/adversarial",
        consumes={"model": "model"}, produces={"model": _final_model, "results": output("adversarial.json")},
        show=summary_lines)
def run(cfg: AdversarialConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) every round; write and return ``adversarial.json`` (and ``adversarial.png``)."""
    run_dir = RunDir(cfg.out, command="redteam adversarial", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _run(cfg, rd.path))


def _run(cfg: AdversarialConfig, out: Path) -> dict[str, Any]:
    sft = RECIPES.get("sft")
    attack_cfg = _redteam_config(cfg.attack, out)
    heldout_kinds = {a.label for m in cfg.heldout for a in _redteam_config(m, out).attacks}
    trained_kinds = [a.label for a in attack_cfg.attacks]
    if overlap := sorted(heldout_kinds & set(trained_kinds)):
        raise ConfigError(f"attack kinds {overlap} are both trained on and held out; a held-out kind must not "
                          "be in the attack config")

    model = cfg.model
    stages: dict[str, Any] = {}
    if cfg.start is not None:
        start = load_config(sft.config, cfg.start.config, [
            f"model.path={cfg.model}", f"seed={cfg.seed}", *cfg.start.set, f"out={out / 'start'}"])
        stages["start"] = run_stage(start, sft.run)
        model = str(out / "start" / "model")

    results: dict[str, Any] = {"config": cfg.model_dump(mode="json"), "trained_kinds": trained_kinds,
                               "heldout_kinds": sorted(heldout_kinds), "stages": stages, "rounds": []}
    examples: list[dict[str, Any]] = []
    control = model
    for r in range(cfg.rounds + 1):
        round_dir = out / f"round-{r}"
        new: list[dict[str, Any]] = []
        data: dict[str, int] = {}
        if r > 0:
            new = _export(cfg, out / f"round-{r - 1}" / "attack", heldout_kinds, seed=cfg.seed + r)
            examples += new
            data = _mix(cfg, examples, round_dir / "train.jsonl", seed=cfg.seed + r)
            stages[f"round-{r}"] = run_stage(_train_config(cfg, model, round_dir, "train", r), sft.run)
            model = str(round_dir / "train" / "model")
        row = _measure(cfg, round_dir, model, attack=True)
        row.update(round=r, new_examples=len(new), training_rows=data)
        if cfg.control and r > 0 and cfg.helpful_data:
            # The same steps on the same helpful rows without the adversarial ones: what training alone does.
            _mix(cfg, [], round_dir / "control.jsonl", seed=cfg.seed + r)
            stages[f"round-{r}-control"] = run_stage(
                _train_config(cfg, control, round_dir, "control", r), sft.run)
            control = str(round_dir / "control" / "model")
            row["control"] = _measure(cfg, round_dir, control, attack=False, prefix="control-")
        results["rounds"].append(row)
        results["table"] = table(results)
        (out / "adversarial.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "adversarial.png")
    return results


def _redteam_config(stage: Stage, out: Path, *, target: str = "world:base", seed: int = 0) -> Any:
    from tether.redteam.run import RedteamConfig

    return load_config(RedteamConfig, stage.config, [*stage.set, f"target={target}", f"seed={seed}", f"out={out}"])


def _train_config(cfg: AdversarialConfig, model: str, round_dir: Path, name: str, r: int) -> Any:
    data = round_dir / ("train.jsonl" if name == "train" else f"{name}.jsonl")
    return load_config(RECIPES.get("sft").config, cfg.train.config, [
        f"model.path={model}", f"data.train={data}", f"loop.max_steps={cfg.steps_per_round}",
        f"seed={cfg.seed + r}", *cfg.train.set, f"out={round_dir / name}"])


def _measure(cfg: AdversarialConfig, round_dir: Path, model: str, *, attack: bool,
             prefix: str = "") -> dict[str, Any]:
    """One model's figures for a round: the training attack run (``attack``), each held-out measurement
    pooled over its repeats, and the evaluation; runs go to ``round_dir / (prefix + name)``."""
    from tether.redteam import run as redteam

    row: dict[str, Any] = {"model": model, "heldout": {}}
    if attack:
        cfg_attack = _redteam_config(cfg.attack, round_dir / f"{prefix}attack", target=model, seed=cfg.seed)
        run_stage(cfg_attack, redteam.run)
        metrics = read_metrics(cfg_attack.out).rates()
        row["attack"] = {k.removeprefix("asr."): v for k, v in metrics.items()
                         if k.startswith("asr.") and k.count(".") == 1}
    for m in cfg.heldout:
        runs = []
        for k in range(m.repeats):
            # The same seeds every round: each round meets the same prompts and shots, so rounds are paired.
            one = _redteam_config(m, round_dir / f"{prefix}{m.name}-{k}", target=model, seed=cfg.seed * 1000 + k)
            run_stage(one, redteam.run)
            runs.append(Path(one.out) / "attacks.jsonl")
        row["heldout"][m.name] = pooled(runs)
    if cfg.evaluation is not None:
        eval_dir = round_dir / f"{prefix}eval"
        evaluated(cfg.evaluation.config, [f"model.path={model}", f"seed={cfg.seed}", *cfg.evaluation.set], eval_dir)
        row["eval"] = read_metrics(eval_dir).rates((*ADVERSARIAL_HEADLINE, cfg.over_refusal_metric))
    return row


def pooled(paths: list[Path]) -> dict[str, dict[str, float]]:
    """Per-prompt attack success pooled over several scored runs of the same goals, by kind and over all
    kinds (``all``); ``n`` counts attempts, and the interval is a bootstrap over goals, since a goal's
    repeats are correlated."""
    by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        for _, row in jsonl_objects(path):
            if row.get("success") is None:
                continue  # unscored: neither a success nor a failure of the attack
            for key in (row["kind"], "all"):
                by_kind[key][str(row["goal"])].append(float(row["success"]))
    return {kind: bootstrap_mean(list(goals.values())).as_dict() for kind, goals in by_kind.items()}


def _export(cfg: AdversarialConfig, attack_dir: Path, heldout_kinds: set[str], *, seed: int) -> list[dict[str, Any]]:
    """The SFT rows of one attack run's successes (held-out kinds never among them), saved beside it."""
    from tether.redteam.export import adversarial_examples

    rows = [row for _, row in jsonl_objects(attack_dir / "attacks.jsonl")]
    sft_rows, pairs = adversarial_examples(rows, cfg.refusal, exclude_kinds=sorted(heldout_kinds), seed=seed)
    write_jsonl(attack_dir / "sft.jsonl", sft_rows, only_if_changed=True)
    write_jsonl(attack_dir / "pairs.jsonl", pairs, only_if_changed=True)
    return sft_rows


def _mix(cfg: AdversarialConfig, examples: list[dict[str, Any]], path: Path, *, seed: int) -> dict[str, int]:
    """Write one round's training set: the adversarial rows so far, repeated to ``adversarial_fraction``
    of the set, with the helpful demonstrations; returns the counts."""
    from tether.data.records import SFTRecord
    from tether.data.sources import load_records

    rng = random.Random(seed)
    helpful: list[dict[str, Any]] = []
    if cfg.helpful_data:
        records = load_records(cfg.helpful_data, SFTRecord, seed=seed).records
        helpful = [r.model_dump(mode="json", exclude_none=True) for r in records]
    adversarial = [{"messages": e["messages"]} for e in examples]
    if not adversarial and not helpful:
        raise UserError(f"{path.parent.name}: no training attack got through and helpful_data is null, so there "
                        "is nothing to train on (set helpful_data, or fewer rounds)")
    if adversarial and helpful:
        want = max(len(adversarial), round(cfg.adversarial_fraction / (1 - cfg.adversarial_fraction) * len(helpful)))
        adversarial = [adversarial[i % len(adversarial)] for i in range(want)]
    rows = adversarial + helpful
    rng.shuffle(rows)
    write_jsonl(path, rows, only_if_changed=True)
    return {"adversarial_unique": len(examples), "adversarial": len(adversarial), "helpful": len(helpful)}


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per round: held-out ASR per measurement, training-kind ASR, over-refusal."""
    metric = results["config"]["over_refusal_metric"]
    rows = []
    for r in results["rounds"]:
        row: dict[str, Any] = {"round": r["round"], "new_examples": r["new_examples"]}
        row |= {f"heldout.{name}": m["all"] for name, m in r["heldout"].items() if "all" in m}
        if "all" in r["attack"]:
            row["trained_kinds.any"] = r["attack"]["all"]
        if metric in r.get("eval", {}):
            row["over_refusal"] = r["eval"][metric]
        control = r.get("control", {})
        row |= {f"control.heldout.{name}": m["all"] for name, m in control.get("heldout", {}).items() if "all" in m}
        if metric in control.get("eval", {}):
            row["control.over_refusal"] = control["eval"][metric]
        rows.append(row)
    return rows


def plot(results: dict[str, Any], path: Path) -> None:
    """Held-out ASR per measurement and over-refusal against the round, with intervals; the control's
    (training without adversarial rows) in grey, from the same round-0 model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["table"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    keys = list(dict.fromkeys(k for row in rows for k in row if isinstance(row[k], dict)
                              and not k.startswith("trained_kinds")))
    for i, key in enumerate(keys):
        control = key.startswith("control.")
        # The control starts from the round-0 model, so its line starts at the treated line's round-0 point.
        points: list[tuple[int, dict[str, float]]] = []
        for row in rows:
            m = row.get(key)
            if m is None and control and row["round"] == 0:
                m = row.get(key.removeprefix("control."))
            if m is not None:
                points.append((row["round"], m))
        if not points:
            continue
        x = [r for r, _ in points]
        y = [100 * m["value"] for _, m in points]
        err = [[100 * (m["value"] - m["ci_low"]) for _, m in points], [100 * (m["ci_high"] - m["value"]) for _,
                                                                       m in points]]
        base = key.removeprefix("control.")
        label = ("over-refusal" if base == "over_refusal" else f"ASR, {base.removeprefix('heldout.')}") + \
            (" (control)" if control else "")
        ax.errorbar(x, y, yerr=err, capsize=3, label=label,
                    linestyle=":" if control else ("--" if "over_refusal" in key else "-"),
                    marker="s" if control else "o", color=f"C{keys.index(base) if base in keys else i}",
                    alpha=0.55 if control else 1.0)
    ax.set_xlabel("adversarial round")
    ax.set_ylabel("%")
    ax.set_xticks([row["round"] for row in rows])
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title("held-out attack kinds vs over-refusal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
