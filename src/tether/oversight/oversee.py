"""``tether oversee protocols``: the protocols on your own questions, models and endpoints.

Questions come from a JSONL file, one object a line::

    {"id": "q1", "question": "...", "options": ["...", "..."], "source": "the text only arguers see",
     "answer": 1}

``answer`` (the true option's index, or its text) is optional; with it, judge accuracy is measured per
protocol, and without it the transcripts are still written. The arguer and the judge are each a model
directory, a hub id, ``world:SIZE``, or the URL of an OpenAI-compatible endpoint. A model loaded
in-process judges by its log-probs of the option letters; an endpoint judges by the letter it writes
(greedy). Out: ``transcripts.jsonl`` (every judged case), ``transcripts.html`` and ``oversee.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir

ProtocolName = Literal["direct", "consultancy", "critique", "debate", "debate-sequential"]


class QuestionRecord(BaseModel):
    """One line of a questions file."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    question: str = Field(min_length=1)
    options: list[str] = Field(min_length=2, max_length=8)
    source: str = Field(min_length=1)
    answer: int | str | None = None

    @model_validator(mode="after")
    def _answer_is_an_option(self) -> QuestionRecord:
        if isinstance(self.answer, str) and self.answer not in self.options:
            raise ValueError(f"answer {self.answer!r} is not one of the options")
        if isinstance(self.answer, int) and not 0 <= self.answer < len(self.options):
            raise ValueError(f"answer {self.answer} is not an option's index (0 to {len(self.options) - 1})")
        return self


class OverseeConfig(Config):
    """``tether oversee protocols``."""

    questions: str = Field(..., description="JSONL file: question, options, source (what arguers see), answer "
                           "(optional: index or option text)")
    protocols: list[ProtocolName] = Field(["direct", "consultancy", "debate"], min_length=1,
                                          description="direct | consultancy | critique (consultancy with a "
                                          "critic after each turn) | debate | debate-sequential")
    judge: str = Field(..., description="the judge: model path, hub id, world:SIZE or endpoint URL")
    arguer: str = Field(..., description="consultants and debaters: model path, hub id, world:SIZE or endpoint URL")
    critic: str | None = Field(None, description="critique's critic (default: the arguer): model path, hub id, "
                               "world:SIZE or endpoint URL")
    roles: Literal["assigned", "open"] = Field("assigned", description="assigned: a consultant (and a critic) for "
                                               "every option, debaters in option order; open: the arguer, shown "
                                               "the source, picks the option it believes, argued by the one "
                                               "consultant and by the first debater")
    view: Literal["transcript", "evidence"] = Field("transcript", description="transcript: arguments with quotes "
                                                    "marked verified or not; evidence: verified quotes only")
    verify: bool = Field(True, description="check quotes against the source (off: every quote shown as verified)")
    rounds: int = Field(1, ge=1, description="turns per arguer")
    best_of: int = Field(1, ge=1, description="candidates per turn; the judge's favourite for the arguer's side kept")
    temperature: float = Field(1.0, ge=0, description="arguers' sampling temperature")
    max_new_tokens: int = Field(128, ge=1, description="an argument's length at most")
    word_similarity: float = Field(80.0, ge=0, le=100, description="per-word similarity a quote needs (0-100)")
    seed: int = 0
    out: str = Field("runs/oversee", description="run directory")


def _show(cfg: OverseeConfig, summary: dict[str, Any]) -> list[str]:
    lines = []
    for name, found in summary["protocols"].items():
        acc = found.get("accuracy")
        shown = "no answers given" if acc is None else (f"{100 * acc['value']:.1f}% [{100 * acc['ci_low']:.1f}, "
                                                        f"{100 * acc['ci_high']:.1f}]")
        lines.append(f"{name}: {found['cases']} judged cases, judge accuracy {shown}")
    lines.append(f"transcripts: {cfg.out}/transcripts.html")
    return lines


@recipe("protocols", group="oversee", config=OverseeConfig,
        summary="Direct QA, consultancy and debate on your questions with any models or endpoints as judge and "
        "arguers; quotes verified against each question's source; transcripts and judge accuracy.",
        example="tether oversee protocols --set questions=qs.jsonl --set judge=Qwen/Qwen2.5-0.5B-Instruct "
        "--set arguer=http://localhost:8000/v1 --out runs/oversee",
        produces={"oversee": output("oversee.json"), "transcripts": output("transcripts.jsonl")}, show=_show)
def run(cfg: OverseeConfig, *, resume: bool = False) -> dict[str, Any]:
    """Load the questions and participants, run every protocol, write and return ``oversee.json``."""
    questions = load_questions(cfg.questions)  # bad input fails before any model is loaded
    run_dir = RunDir(cfg.out, command="oversee protocols", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _run(cfg, questions, rd.path))


def load_questions(path: str) -> list[Any]:
    """The file's questions as :class:`~tether.oversight.protocols.Question`; a bad line is a
    :class:`~tether.core.errors.DataError` naming the file and line."""
    from tether.core.errors import DataError
    from tether.data.io import read_records
    from tether.oversight.protocols import Question

    records = read_records(path, QuestionRecord).records
    if not records:
        raise DataError(f"{path}: no questions")
    questions, seen = [], set()
    for i, r in enumerate(records):
        qid = r.id or f"q{i}"
        if qid in seen:
            raise DataError(f"{path}: question id {qid!r} appears twice")
        seen.add(qid)
        answer = r.options.index(r.answer) if isinstance(r.answer, str) else r.answer
        questions.append(Question(qid, r.question, tuple(r.options), r.source, answer))
    return questions


def _participants(cfg: OverseeConfig) -> tuple[Any, Any, Any, Any]:
    """The judge, the arguer, the critic (the arguer unless another is named) and, for open roles, the
    believer that picks each question's side: the arguer's own model shown the source (its label log-probs
    in-process, the letter it writes at an endpoint)."""
    from tether.models.generation import GenerationSettings, HFGenerator
    from tether.models.targets import is_endpoint, target_generator
    from tether.oversight.protocols import ChoiceJudge, GeneratorArguer, GeneratorJudge, MemoArguer, View

    view = View(cfg.view, verify=cfg.verify)
    if is_endpoint(cfg.judge):
        judge: Any = GeneratorJudge(target_generator(cfg.judge), GenerationSettings(max_new_tokens=8,
                                                                                    temperature=0.0), view)
    else:
        from tether.models.loading import ModelConfig, load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(ModelConfig(path=cfg.judge))
        model.eval()
        judge = ChoiceJudge(model, tokenizer, view)
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)
    generator = target_generator(cfg.arguer)
    arguer = MemoArguer(GeneratorArguer(generator, settings, seed=cfg.seed), most=cfg.best_of)
    critic = arguer if cfg.critic in (None, cfg.arguer) else MemoArguer(
        GeneratorArguer(target_generator(cfg.critic), settings, seed=cfg.seed), most=cfg.best_of)
    believer: Any = None
    if cfg.roles == "open":
        believer = (ChoiceJudge(generator.model, generator.tokenizer, View("source"))
                    if isinstance(generator, HFGenerator) else
                    GeneratorJudge(generator, GenerationSettings(max_new_tokens=8, temperature=0.0), View("source")))
    return judge, arguer, critic, believer


def _run(cfg: OverseeConfig, questions: list[Any], out: Path) -> dict[str, Any]:
    import torch

    from tether.core.stats import bootstrap_mean
    from tether.oversight.protocols import choose_sides, run_consultancy, run_critique, run_debate, run_direct
    from tether.oversight.report import per_question, transcripts_page

    judge, arguer, critic, believer = _participants(cfg)
    runs: dict[str, list[Any]] = {}
    with torch.no_grad():
        chosen = choose_sides(questions, believer) if believer is not None else None
        shared: dict[str, Any] = {"rounds": cfg.rounds, "best_of": cfg.best_of,
                                  "word_similarity": cfg.word_similarity, "chosen": chosen}
        for protocol in cfg.protocols:
            if protocol == "direct":
                runs[protocol] = run_direct(questions, judge)
            elif protocol == "consultancy":
                runs[protocol] = run_consultancy(questions, arguer, judge, **shared)
            elif protocol == "critique":
                runs[protocol] = run_critique(questions, arguer, critic, judge, **shared)
            else:
                runs[protocol] = run_debate(questions, [arguer], judge, sequential=protocol == "debate-sequential",
                                            **shared)
    summary: dict[str, Any] = {"questions": len(questions), "judge": cfg.judge, "arguer": cfg.arguer,
                               "critic": cfg.critic or cfg.arguer, "roles": cfg.roles, "protocols": {}}
    if chosen is not None:
        known = [q for q in questions if q.answer is not None]
        summary["open_roles"] = {"chosen": chosen, "chose_right": round(
            sum(c == q.answer for q, c in zip(questions, chosen, strict=True) if q.answer is not None)
            / len(known), 4) if known else None}
    for name, transcripts in runs.items():
        found: dict[str, Any] = {"cases": len(transcripts)}
        scored = [t for t in transcripts if t.score is not None]
        if scored:
            found["accuracy"] = bootstrap_mean(list(per_question(scored).values()), seed=cfg.seed).as_dict()
        checks = [c for t in transcripts for turn in t.turns for c in turn.quotes]
        found["quotes"] = {"made": len(checks), "unverified": sum(not c.verified for c in checks)}
        summary["protocols"][name] = found
    with (out / "transcripts.jsonl").open("w") as f:
        for name, transcripts in runs.items():
            for t in transcripts:
                f.write(json.dumps({"run": name, **t.as_dict()}) + "\n")
    (out / "transcripts.html").write_text(transcripts_page(runs, per_run=50))
    (out / "oversee.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
