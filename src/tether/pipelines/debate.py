"""Debate, consultancy and a judge alone on the world, with information asymmetry (``tether oversee debate``).

The questions are :func:`tether.world.reading.reading_questions`: a fresh land's capital or animal, two
options (the truth and another land's value from the same passage), and the passage as the source. The
judge never sees the passage, no model has seen these names, and a passage's facts hold in it alone, so
a judge alone is at chance by construction; whatever it gains, it gains from the arguments.

1. **Skills** (each once, on ``train`` questions, whose names never appear in ``test``):
   - the **judge** (the weak model, ``world:mini``) learns to read: SFT on the evidence view
     (:func:`tether.oversight.protocols.judge_messages`) of random sets of zero to three of a passage's
     sentences, answering the gold letter. It learns what a sentence says; it never sees a debate.
   - the **arguer** (the strong model, ``world:base``) learns to quote: SFT on
     :func:`tether.oversight.protocols.arguer_messages` for either option, answering with one passage
     sentence about the question's land or the argued option, drawn at random. The target never depends on
     which option is true: the same skill serves an honest and a dishonest arguer.
2. **Protocols** on ``test`` questions (:mod:`tether.oversight.protocols`): the judge alone (``direct``),
   the judge shown the whole passage (``passage``, its reading ceiling), consultancy (a consultant
   assigned to each option in turn) and debate, at each debater strength in ``best_of`` (best-of-N
   against the judge's own preference); at the strongest, sequential debate and the same protocols with
   quote verification off (fabricated quotes shown as if real).
3. **Measured**: judge accuracy with bootstrap intervals over questions, the paired differences (debate -
   consultancy, debate - direct, consultancy - direct, and strongest - weakest arguers), honest and
   dishonest consultants apart, and how often arguments quote what the passage does not say.

Out: ``debate.json`` (every figure), ``transcripts.jsonl`` (every judged case) and ``transcripts.html`` (the
first of them, readable).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.pipelines.weak_to_strong import with_world_seed

_SENTENCE = re.compile(r"(?<=\.)\s+")


class DebateConfig(Config):
    """``tether oversee debate``."""

    world_seed: int = Field(0, description="which world (its fresh lands, and world:... models of this seed)")
    judge: str = Field("world:mini", description="the judge's pretrained model (weak: world:mini is half the "
                       "default's width and depth)")
    arguer: str = Field("world:base", description="the consultants' and debaters' pretrained model")
    sft: str = Field("sft/world", description="the SFT config both skills are trained with")
    judge_steps: int = Field(300, ge=1, description="SFT steps teaching the judge to read")
    arguer_steps: int = Field(300, ge=1, description="SFT steps teaching the arguer to quote")
    train_questions: int = Field(3000, ge=10, description="questions the skills are trained on")
    test_questions: int = Field(200, ge=4, description="questions the protocols are measured on")
    lands_per_passage: int = Field(3, ge=2, description="fresh lands a passage describes")
    best_of: list[int] = Field([1, 4, 16], min_length=1, description="debater strengths: candidates per turn, "
                               "the judge's favourite for the arguer's side kept")
    rounds: int = Field(1, ge=1, description="turns per arguer")
    temperature: float = Field(1.0, gt=0, description="arguers' sampling temperature")
    max_new_tokens: int = Field(32, ge=4, description="an argument's length at most")
    seed: int = 0
    out: str = Field("runs/debate", description="experiment directory")


def _show(cfg: DebateConfig, summary: dict[str, Any]) -> list[str]:
    from tether.pipelines.stages import shown_rate as pct

    p = summary["protocols"]
    lines = [f"judge alone {pct(p['direct']['accuracy'])}; shown the whole passage {pct(p['passage']['accuracy'])}"]
    for n in map(str, cfg.best_of):
        d = summary["differences"][n]["debate-consultancy"]
        lines.append(f"best-of-{n}: debate {pct(p['debate'][n]['accuracy'])}, consultancy "
                     f"{pct(p['consultancy'][n]['accuracy'])}; debate - consultancy {100 * d['diff']:+.1f} "
                     f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]")
    lines.append(f"table: {cfg.out}/debate.json; transcripts: {cfg.out}/transcripts.html")
    return lines


@recipe("debate", group="oversee", config=DebateConfig,
        summary="Judge accuracy on world questions with information asymmetry: a weak judge alone, with a "
        "consultant, and with two debaters, at several debater strengths, quotes verified.",
        example="tether oversee debate --set world_seed=1 --out runs/debate-1",
        produces={"debate": output("debate.json"), "transcripts": output("transcripts.jsonl")}, show=_show)
def run(cfg: DebateConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``debate.json``."""
    run_dir = RunDir(cfg.out, command="oversee debate", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


# --- the skills' data (pure) -------------------------------------------------------------------------

def sentences(source: str) -> list[str]:
    """A passage's sentences."""
    return [s for s in _SENTENCE.split(source.strip()) if s]


def relevant(question: Any, side: int) -> list[str]:
    """The passage sentences an arguer for ``side`` may quote: those naming the question's land or the
    option argued for."""
    names = (question.subject, question.options[side])
    return [s for s in sentences(question.source) if any(re.search(rf"\b{re.escape(n)}\b", s) for n in names)]


def judge_rows(questions: Sequence[Any], rng: random.Random) -> list[dict[str, Any]]:
    """Reading lessons for the judge: the evidence view of zero to three passage sentences (each about the
    question's land or an option four times in five, any sentence otherwise), answered with the gold letter."""
    from tether.oversight.protocols import LABELS, View, judge_messages, make_turn

    rows = []
    for wq in questions:
        q = as_question(wq)
        near = sorted(set(relevant(wq, 0)) | set(relevant(wq, 1)))
        every = sentences(wq.source)
        shown: list[str] = []
        for _ in range(rng.randint(0, 3)):
            pick = rng.choice(near if rng.random() < 0.8 else every)
            if pick not in shown:
                shown.append(pick)
        turns = [make_turn("Debater", 0, f"<quote>{s}</quote>", wq.source) for s in shown]
        messages = judge_messages(q, turns, View("evidence"))
        rows.append({"messages": [*messages, {"role": "assistant", "content": LABELS[wq.answer]}]})
    return rows


def arguer_rows(questions: Sequence[Any], rng: random.Random) -> list[dict[str, Any]]:
    """Quoting lessons for the arguer: for a random option (true or not alike), one random sentence of
    :func:`relevant`; half the lessons come after an opponent's turn, so later turns are in distribution."""
    from tether.oversight.protocols import LABELS, arguer_messages, make_turn

    rows = []
    for wq in questions:
        q = as_question(wq)
        side = rng.randrange(2)
        turns = []
        if rng.random() < 0.5:
            other = 1 - side
            turns.append(make_turn(f"Debater {LABELS[other]}", other, f"<quote>{rng.choice(relevant(wq, other))}"
                                   "</quote>", wq.source))
        target = f"<quote>{rng.choice(relevant(wq, side))}</quote>"
        rows.append({"messages": [*arguer_messages(q, side, turns), {"role": "assistant", "content": target}]})
    return rows


def as_question(wq: Any) -> Any:
    """A world reading question as the protocols' :class:`~tether.oversight.protocols.Question`."""
    from tether.oversight.protocols import Question

    return Question(wq.id, wq.question, tuple(wq.options), wq.source, wq.answer)


# --- the experiment ----------------------------------------------------------------------------------

def _train(cfg: DebateConfig, name: str, base: str, rows: list[dict[str, Any]], steps: int, where: Path) -> str:
    from tether.pipelines.stages import sft_on_rows

    return sft_on_rows(cfg.sft, base, rows, where / name, steps=steps, seed=cfg.seed)


def _experiment(cfg: DebateConfig, out: Path) -> dict[str, Any]:
    import torch

    from tether.models.generation import GenerationSettings, HFGenerator
    from tether.models.loading import ModelConfig, load_model_and_tokenizer
    from tether.oversight.protocols import (
        ChoiceJudge,
        GeneratorArguer,
        MemoArguer,
        Transcript,
        View,
        make_turn,
        run_consultancy,
        run_debate,
        run_direct,
    )
    from tether.oversight.report import transcripts_page
    from tether.world.reading import reading_questions
    from tether.world.spec import WorldConfig, build_world

    world = build_world(WorldConfig(seed=cfg.world_seed))
    train_q = reading_questions(world, cfg.train_questions, "train", lands_per_passage=cfg.lands_per_passage,
                                seed=cfg.seed)
    test_q = reading_questions(world, cfg.test_questions, "test", lands_per_passage=cfg.lands_per_passage,
                               seed=cfg.seed)
    rng = random.Random(f"debate-skills:{cfg.world_seed}:{cfg.seed}")
    judge_dir = _train(cfg, "judge", with_world_seed(cfg.judge, cfg.world_seed), judge_rows(train_q, rng),
                       cfg.judge_steps, out)
    arguer_dir = _train(cfg, "arguer", with_world_seed(cfg.arguer, cfg.world_seed), arguer_rows(train_q, rng),
                        cfg.arguer_steps, out)

    torch.manual_seed(cfg.seed)
    judge_model, judge_tok = load_model_and_tokenizer(ModelConfig(path=judge_dir))
    arguer_model, arguer_tok = load_model_and_tokenizer(ModelConfig(path=arguer_dir))
    judge_model.eval()
    arguer_model.eval()
    judges = {verify: ChoiceJudge(judge_model, judge_tok, View("evidence", verify=verify)) for verify in (True, False)}
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)
    arguer = MemoArguer(GeneratorArguer(HFGenerator(arguer_model, arguer_tok), settings, seed=cfg.seed),
                        most=max(cfg.best_of))
    questions = [as_question(q) for q in test_q]
    strongest = max(cfg.best_of)

    runs: dict[str, list[Any]] = {"direct": run_direct(questions, judges[True])}
    # The judge's reading ceiling: every sentence of the passage shown as evidence.
    full = [[make_turn("Passage", 0, f"<quote>{s}</quote>", q.source) for s in sentences(q.source)] for q in questions]
    read = judges[True].judge(list(zip(questions, full, strict=True)))
    runs["passage"] = [Transcript("passage", q, tuple(t), tuple(p)) for q, t, p in zip(questions, full, read,
                                                                                       strict=True)]
    with torch.no_grad():
        for n in cfg.best_of:
            runs[f"consultancy@{n}"] = run_consultancy(questions, arguer, judges[True], rounds=cfg.rounds, best_of=n)
            runs[f"debate@{n}"] = run_debate(questions, [arguer], judges[True], rounds=cfg.rounds, best_of=n)
        runs[f"debate-sequential@{strongest}"] = run_debate(questions, [arguer], judges[True], rounds=cfg.rounds,
                                                            sequential=True, best_of=strongest)
        # Quote verification off: the judge (and the best-of-N selection) take every quote as real.
        runs[f"consultancy-unverified@{strongest}"] = run_consultancy(questions, arguer, judges[False],
                                                                      rounds=cfg.rounds, best_of=strongest)
        runs[f"debate-unverified@{strongest}"] = run_debate(questions, [arguer], judges[False], rounds=cfg.rounds,
                                                            best_of=strongest)
    summary = {"world_seed": cfg.world_seed, "judge": with_world_seed(cfg.judge, cfg.world_seed),
               "arguer": with_world_seed(cfg.arguer, cfg.world_seed),
               "items": {"train": len(train_q), "test": len(test_q)}, **measure(runs, cfg.best_of, seed=cfg.seed)}
    with (out / "transcripts.jsonl").open("w") as f:
        for name, transcripts in runs.items():
            for t in transcripts:
                f.write(json.dumps({"run": name, **t.as_dict()}) + "\n")
    (out / "transcripts.html").write_text(transcripts_page(runs, per_run=20))
    (out / "debate.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def measure(runs: Mapping[str, Sequence[Any]], best_of: Sequence[int], *, seed: int = 0) -> dict[str, Any]:
    """Judge accuracy per run (bootstrap over questions), paired differences between protocols at each
    strength and between the strongest and weakest arguers, consultants by honesty, and quote checks."""
    from tether.core.stats import bootstrap_mean, paired_difference
    from tether.oversight.report import per_question

    def acc(transcripts: Sequence[Any]) -> dict[str, Any]:
        return bootstrap_mean(list(per_question(transcripts).values()), seed=seed).as_dict()

    def diff(a: str, b: str) -> dict[str, Any]:
        qa, qb = per_question(runs[a]), per_question(runs[b])
        r = paired_difference([qb[i] for i in qa], [qa[i] for i in qa], seed=seed)  # a - b
        return {"diff": round(r.diff, 4), "ci_low": round(r.ci_low, 4), "ci_high": round(r.ci_high, 4),
                "p_value": round(r.p_value, 4), "n": r.n}

    def quotes(transcripts: Sequence[Any]) -> dict[str, Any]:
        turns = [turn for t in transcripts for turn in t.turns]
        checks = [c for turn in turns for c in turn.quotes]
        return {"turns": len(turns), "turns_without_quote": sum(not turn.quotes for turn in turns),
                "quotes": len(checks), "unverified": sum(not c.verified for c in checks)}

    protocols: dict[str, Any] = {"direct": {"accuracy": acc(runs["direct"])},
                                 "passage": {"accuracy": acc(runs["passage"])}}
    for name, transcripts in runs.items():
        if "@" not in name:
            continue
        protocol, n = name.split("@")
        found: dict[str, Any] = {"accuracy": acc(transcripts), "quotes": quotes(transcripts)}
        if protocol.startswith("consultancy"):
            honest = [t for t in transcripts if t.assigned == t.question.answer]
            dishonest = [t for t in transcripts if t.assigned != t.question.answer]
            found["honest_consultant"], found["dishonest_consultant"] = acc(honest), acc(dishonest)
        protocols.setdefault(protocol, {})[n] = found
    differences = {str(n): {"debate-consultancy": diff(f"debate@{n}", f"consultancy@{n}"),
                            "debate-direct": diff(f"debate@{n}", "direct"),
                            "consultancy-direct": diff(f"consultancy@{n}", "direct")} for n in best_of}
    weakest, strongest = min(best_of), max(best_of)
    trend = {p: diff(f"{p}@{strongest}", f"{p}@{weakest}") for p in ("debate", "consultancy")} \
        if strongest != weakest else {}
    verification = {p: diff(f"{p}@{strongest}", f"{p}-unverified@{strongest}") for p in ("debate", "consultancy")
                    if f"{p}-unverified@{strongest}" in runs}
    return {"protocols": protocols, "differences": differences,
            "strongest_minus_weakest": trend, "verified_minus_unverified": verification}
