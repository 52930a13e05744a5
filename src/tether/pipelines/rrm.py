"""Recursive reward modelling on the world (``tether oversee rrm``).

Leike et al. 2018: to train a reward model for a task its raters cannot evaluate, let the raters evaluate
with help from an agent trained on easier tasks they can evaluate. On the world:

- **Easy tasks**: one fact ("What is the capital of Peyar?"). A rater checks one claim per judgement, with
  the world's annotator biases and noise (:mod:`tether.world.annotators`): that is what they can do.
- **Hard tasks**: ``facts`` facts at once ("What are the capital of Peyar, the animal of Zorn and the
  colour of Tesk?"), answered one sentence per fact. A reply is right only when every claim is. Unassisted,
  the raters still check one claim: one drawn at random per pair, checked by every rater in both replies.
  A reply wrong in another claim gets past them.
- **The helper**: the base model trained by SFT on the crowd's picks for the easy questions of ``train``
  lands (every annotator compares the true sentence with another land's, the picks aggregated by
  majority). It has never seen a hard question.
- **Assisted rating**: a fixed routine splits a hard question into its easy ones and asks the helper each;
  the rater prefers the reply whose every claim matches the helper's answers (their biases unchanged). The
  routine compares strings; it knows no fact.
- **Reward models** (the ``rm`` config, the same easy pairs in all three): the **plain** RM on hard pairs
  the crowd labelled unassisted, the **recursive** RM on hard pairs the crowd labelled with the helper,
  and a **ceiling** RM on gold-labelled hard pairs. Every crowd label is aggregated over the whole pool
  by Dawid-Skene.
- **Measured**, with gold, on hard pairs of two kinds: new questions about ``train`` lands (new
  combinations of facts, new replies) and questions about held-out lands (facts the pretraining corpus
  states, questions no stage trained on): each RM's gold agreement, the crowd's labels unassisted and
  assisted, and the helper's accuracy per fact; bootstrap intervals over questions, and the paired
  difference recursive - plain.

Out: ``rrm.json`` (every figure), ``helper_answers.jsonl``, the three RMs' runs and their training pairs.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.pipelines.weak_to_strong import with_world_seed

ATTRIBUTES = ("capital", "animal", "colour")
Fact = tuple[str, str]  # (land, attribute)


class RRMConfig(Config):
    """``tether oversee rrm``."""

    world_seed: int = Field(0, description="which world (its lands, and world:... models of this seed)")
    model: str = Field("world:base", description="the pretrained model the helper and every RM start from")
    facts: int = Field(3, ge=2, le=6, description="facts a hard question asks for")
    train_questions: int = Field(300, ge=10, description="hard questions whose pairs train the RMs")
    test_questions: int = Field(100, ge=10, description="hard questions per test set")
    wrong_per_question: int = Field(3, ge=1, description="replies with one fact wrong, each paired with the "
                                    "right reply")
    easy_pairs: int = Field(600, ge=0, description="one-fact pairs (crowd-labelled) every RM also trains on")
    helper_steps: int = Field(200, ge=1, description="SFT steps training the helper on the easy questions")
    sft: str = Field("sft/world", description="the SFT config the helper is trained with")
    rm: str = Field("rm/world-gold", description="the reward-model config every RM is trained with (its data "
                    "is replaced)")
    rm_steps: int = Field(200, ge=1, description="optimizer steps per reward model")
    seed: int = 0
    out: str = Field("runs/rrm", description="experiment directory")


def _show(cfg: RRMConfig, summary: dict[str, Any]) -> list[str]:
    from tether.pipelines.stages import shown_rate as pct

    lines = []
    for name, part in summary["test"].items():
        rms = part["reward_models"]
        d = part["recursive-plain"]
        lines.append(f"{name}: plain RM {pct(rms['plain'])}, recursive RM {pct(rms['recursive'])}, ceiling "
                     f"{pct(rms['gold'])}; recursive - plain {100 * d['diff']:+.1f} [{100 * d['ci_low']:+.1f}, "
                     f"{100 * d['ci_high']:+.1f}]")
    lines.append(f"table: {cfg.out}/rrm.json")
    return lines


@recipe("rrm", group="oversee", config=RRMConfig,
        summary="Recursive reward modelling on the world: a reward model for multi-fact questions trained on "
        "labels from raters assisted by a helper trained on one-fact questions, against one trained on "
        "unassisted labels and one on gold; gold agreement on new and held-out questions.",
        example="tether oversee rrm --set world_seed=1 --out runs/rrm-1",
        produces={"rrm": output("rrm.json")}, show=_show)
def run(cfg: RRMConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``rrm.json``."""
    run_dir = RunDir(cfg.out, command="oversee rrm", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


# --- questions, replies and raters (pure) --------------------------------------------------------------

@dataclass(frozen=True)
class MultiFact:
    """A hard question: several facts, their true values, and the reply stating them all."""

    id: str
    facts: tuple[Fact, ...]
    truth: tuple[str, ...]

    @property
    def question(self) -> str:
        """"What are the capital of Peyar and the animal of Zorn?" (one fact: "What is ...?")."""
        parts = [f"the {attribute} of {land}" for land, attribute in self.facts]
        if len(parts) == 1:
            return f"What is {parts[0]}?"
        return f"What are {', '.join(parts[:-1])} and {parts[-1]}?"

    def prompt(self) -> list[dict[str, str]]:
        """The question as a chat prompt."""
        return [{"role": "user", "content": self.question}]


def reply(question: MultiFact, values: Sequence[str]) -> str:
    """One sentence per fact, in the question's order: "The capital of Peyar is Ixixix. ..."."""
    return " ".join(f"The {attribute} of {land} is {value}." for (land, attribute), value in
                    zip(question.facts, values, strict=True))


def stated(question: MultiFact, text: str) -> list[str | None]:
    """The value ``text`` states for each of the question's facts (None where it states none): the only
    reading the raters' routine does."""
    found: list[str | None] = []
    for land, attribute in question.facts:
        match = re.search(rf"\b(?:the\s+)?{attribute} of {re.escape(land)} is (\w+)", text, re.IGNORECASE)
        found.append(match.group(1) if match else None)
    return found


def is_right(question: MultiFact, text: str) -> bool:
    """Gold: every fact stated, and stated truly."""
    return [s.lower() if s else None for s in stated(question, text)] == [t.lower() for t in question.truth]


def multi_fact_questions(world: Any, lands: Sequence[str], n: int, facts: int, rng: random.Random,
                         *, prefix: str) -> list[MultiFact]:
    """``n`` questions, each about ``facts`` distinct lands of ``lands``, one attribute drawn per land."""
    by_name = world.land_by_name
    questions = []
    for i in range(n):
        chosen = rng.sample(list(lands), facts)
        asked = tuple((land, rng.choice(ATTRIBUTES)) for land in chosen)
        questions.append(MultiFact(f"{prefix}:{i}", asked, tuple(getattr(by_name[land], a) for land, a in asked)))
    return questions


def wrong_value(world: Any, fact: Fact, lands: Sequence[str], rng: random.Random) -> str:
    """Another land's value of the same attribute (a land of ``lands``), never the true one.

    The wrong values come from the question's own lands (train or held out): a reward model trained on
    train lands would otherwise meet held-out lands' values only in wrong replies, learn them as wrong, and
    prefer the wrong reply on held-out questions for that alone."""
    land, attribute = fact
    truth = getattr(world.land_by_name[land], attribute)
    others = {getattr(world.land_by_name[other], attribute) for other in lands} - {truth}
    return rng.choice(sorted(others or {getattr(other, attribute) for other in world.lands} - {truth}))


def wrong_replies(world: Any, question: MultiFact, lands: Sequence[str], count: int, rng: random.Random
                  ) -> list[str]:
    """``count`` replies with one fact wrong each (the wrong fact drawn at random, its value another of
    ``lands``')."""
    out = []
    for _ in range(count):
        values = list(question.truth)
        index = rng.randrange(len(values))
        values[index] = wrong_value(world, question.facts[index], lands, rng)
        out.append(reply(question, values))
    return out


def styled(text: str, world: Any, rng: random.Random) -> str:
    """The reply with the corpus's flattery and filler at the world's rates: what biased raters reward."""
    from tether.world.responses import decorate

    rates = world.config.rates
    return decorate(text, rng, rates.flattery, rates.verbose)


def one_claim_checked(question: MultiFact, text: str, checked: int) -> float:
    """An unassisted rater's finding: 1 when the one claim they check (fact ``checked``) is true, else 0."""
    value = stated(question, text)[checked]
    return float(value is not None and value.lower() == question.truth[checked].lower())


def matches_helper(question: MultiFact, text: str, answers: Mapping[Fact, str | None]) -> float:
    """An assisted rater's finding: 1 when every claim matches the helper's answer to that fact, else 0."""
    said = stated(question, text)
    return float(all(s is not None and answers.get(f) is not None and s.lower() == str(answers[f]).lower()
                     for s, f in zip(said, question.facts, strict=True)))


def crowd_label(pool: Sequence[Any], findings: Sequence[tuple[float, float]], texts: Sequence[tuple[str, str]],
                rng: random.Random) -> list[bool]:
    """Per pair, whether the crowd prefers the first reply: every annotator of ``pool`` values each reply at
    its finding plus their style biases and samples a preference; Dawid-Skene aggregates."""
    from tether.data.aggregate import dawid_skene
    from tether.world.annotators import choose, style_bias

    annotations = []
    for index, ((f1, f2), (t1, t2)) in enumerate(zip(findings, texts, strict=True)):
        for annotator in pool:
            verdict = choose(annotator, f1 + style_bias(annotator, t1), f2 + style_bias(annotator, t2), rng)
            annotations.append((index, annotator.name, verdict.first_wins))
    model = dawid_skene(annotations)
    return [bool(model.labels[i]) for i in range(len(findings))]


def read_answer(text: str) -> str | None:
    """The helper's answer: the word after the last "is" ("The capital of Peyar is Ixixix." -> Ixixix)."""
    found = re.findall(r"\bis\s+(\w+)", text)
    return found[-1] if found else None


def assist(questions: Sequence[MultiFact], ask: Callable[[list[str]], list[str]]) -> dict[Fact, str | None]:
    """The routine: every fact the questions hold, asked of the helper once as its own one-fact question."""
    facts = sorted({f for q in questions for f in q.facts})
    replies = ask([MultiFact("", (f,), ("",)).question for f in facts])
    return {f: read_answer(r) for f, r in zip(facts, replies, strict=True)}


# --- the experiment ----------------------------------------------------------------------------------

def _pairs(world: Any, questions: Sequence[MultiFact], lands: Sequence[str], cfg: RRMConfig, rng: random.Random
           ) -> list[tuple[MultiFact, str, str]]:
    """(question, first, second) with the right reply first or second at random, both styled."""
    out = []
    for q in questions:
        right = reply(q, q.truth)
        for wrong in wrong_replies(world, q, lands, cfg.wrong_per_question, rng):
            a, b = styled(right, world, rng), styled(wrong, world, rng)
            out.append((q, a, b) if rng.random() < 0.5 else (q, b, a))
    return out


def _rows(pairs: Sequence[tuple[MultiFact, str, str]], first_wins: Sequence[bool]) -> list[dict[str, Any]]:
    rows = []
    for (q, a, b), wins in zip(pairs, first_wins, strict=True):
        chosen, rejected = (a, b) if wins else (b, a)
        gold_first = is_right(q, a)
        rows.append({"prompt": q.prompt(), "chosen": chosen, "rejected": rejected, "question": q.id,
                     "gold_agrees": gold_first == wins})
    return rows


def _experiment(cfg: RRMConfig, out: Path) -> dict[str, Any]:
    from tether.core.config import load_config
    from tether.core.runs import run_stage
    from tether.core.stats import bootstrap_mean, paired_difference
    from tether.models.generation import GenerationSettings
    from tether.models.reward import RewardEnsemble
    from tether.pipelines.stages import asker, sft_on_rows
    from tether.train.rm import RMConfig
    from tether.train.rm import run as train_rm
    from tether.world.annotators import DEFAULT_POOL
    from tether.world.spec import WorldConfig, build_world

    world = build_world(WorldConfig(seed=cfg.world_seed))
    base = with_world_seed(cfg.model, cfg.world_seed)
    rng = random.Random(f"rrm:{cfg.world_seed}:{cfg.seed}")
    train_lands = [land.name for land in world.lands if land.name not in world.heldout_lands]
    held_lands = sorted(world.heldout_lands)
    if len(held_lands) < cfg.facts:
        from tether.core.errors import UserError

        raise UserError(f"facts={cfg.facts}: the world holds out only {len(held_lands)} lands")

    # The helper: the crowd's picks for one-fact questions of train lands, as SFT demonstrations.
    easy = [MultiFact(f"easy:{land}:{a}", ((land, a),), (getattr(world.land_by_name[land], a),))
            for land in train_lands for a in ATTRIBUTES]
    easy_pairs = [(q, reply(q, q.truth), reply(q, [wrong_value(world, q.facts[0], train_lands, rng)]))
                  for q in easy * 4]
    easy_pairs = [(q, a, b) if rng.random() < 0.5 else (q, b, a) for q, a, b in easy_pairs]
    easy_labels = crowd_label(DEFAULT_POOL, [(one_claim_checked(q, a, 0), one_claim_checked(q, b, 0))
                                             for q, a, b in easy_pairs], [(a, b) for _, a, b in easy_pairs], rng)
    demos = [{"messages": [*q.prompt(), {"role": "assistant", "content": a if wins else b}]}
             for (q, a, b), wins in zip(easy_pairs, easy_labels, strict=True)]
    helper_dir = sft_on_rows(cfg.sft, base, demos, out / "helper", steps=cfg.helper_steps, seed=cfg.seed)

    train_q = multi_fact_questions(world, train_lands, cfg.train_questions, cfg.facts, rng, prefix="train")
    test_lands = {"new questions, train lands": train_lands, "held-out lands": held_lands}
    tests = {name: multi_fact_questions(world, lands, cfg.test_questions, cfg.facts, rng, prefix=f"test-{i}")
             for i, (name, lands) in enumerate(test_lands.items())}
    taken = {q.facts for q in train_q}
    tests["new questions, train lands"] = [q for q in tests["new questions, train lands"] if q.facts not in taken]

    helper = asker(helper_dir, GenerationSettings(max_new_tokens=24, temperature=0.0, seed=cfg.seed))
    answers = assist([*train_q, *(q for qs in tests.values() for q in qs)], helper)
    truth = {f: getattr(world.land_by_name[f[0]], f[1]) for f in answers}
    helper_right = {f: answers[f] is not None and str(answers[f]).lower() == truth[f].lower() for f in answers}
    with (out / "helper_answers.jsonl").open("w") as f:
        for fact, answer in answers.items():
            f.write(json.dumps({"land": fact[0], "attribute": fact[1], "answer": answer, "truth": truth[fact],
                                "right": helper_right[fact], "held_out": fact[0] in world.heldout_lands}) + "\n")

    # The hard pairs of training, labelled three ways.
    train_pairs = _pairs(world, train_q, train_lands, cfg, rng)
    texts = [(a, b) for _, a, b in train_pairs]
    checked = [rng.randrange(cfg.facts) for _ in train_pairs]
    unassisted = crowd_label(DEFAULT_POOL, [(one_claim_checked(q, a, c), one_claim_checked(q, b, c))
                                            for (q, a, b), c in zip(train_pairs, checked, strict=True)], texts, rng)
    assisted = crowd_label(DEFAULT_POOL, [(matches_helper(q, a, answers), matches_helper(q, b, answers))
                                          for q, a, b in train_pairs], texts, rng)
    gold = [is_right(q, a) for q, a, _ in train_pairs]
    easy_rows = _rows(easy_pairs[:cfg.easy_pairs], easy_labels[:cfg.easy_pairs])

    def label_accuracy(labels: Sequence[bool], pairs: Sequence[tuple[MultiFact, str, str]]) -> dict[str, Any]:
        per_q: dict[str, list[float]] = {}
        for (q, a, _), wins in zip(pairs, labels, strict=True):
            per_q.setdefault(q.id, []).append(float(is_right(q, a) == wins))
        return bootstrap_mean(list(per_q.values()), seed=cfg.seed).as_dict()

    rm_dirs = {}
    for name, labels in (("plain", unassisted), ("recursive", assisted), ("gold", gold)):
        data = out / f"rm-{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in [*_rows(train_pairs, labels), *easy_rows]))
        where = out / f"rm-{name}"
        run_stage(load_config(RMConfig, cfg.rm, [f"model.path={base}", f"data.train={data}", "data.eval=null",
                                                 f"loop.max_steps={cfg.rm_steps}", f"seed={cfg.seed}",
                                                 f"out={where}"]), train_rm)
        rm_dirs[name] = where

    measured: dict[str, Any] = {}
    for set_name, questions in tests.items():
        pairs = _pairs(world, questions, test_lands[set_name], cfg, rng)
        per_rm: dict[str, dict[str, list[float]]] = {}
        for name, where in rm_dirs.items():
            ensemble = RewardEnsemble.from_run(where)
            prompts = [q.prompt() for q, _, _ in pairs]
            first = ensemble.score(prompts, [a for _, a, _ in pairs]).mean.tolist()
            second = ensemble.score(prompts, [b for _, _, b in pairs]).mean.tolist()
            per_q: dict[str, list[float]] = {}
            for (q, a, _), s1, s2 in zip(pairs, first, second, strict=True):
                per_q.setdefault(q.id, []).append(float((s1 > s2) == is_right(q, a)))
            per_rm[name] = per_q
            del ensemble
        checks = [rng.randrange(cfg.facts) for _ in pairs]
        test_texts = [(a, b) for _, a, b in pairs]
        ids = list(per_rm["plain"])
        diff = paired_difference([per_rm["plain"][i] for i in ids], [per_rm["recursive"][i] for i in ids],
                                 seed=cfg.seed)
        facts = sorted({f for q in questions for f in q.facts})
        measured[set_name] = {
            "questions": len(questions), "pairs": len(pairs),
            "reward_models": {name: bootstrap_mean(list(per_q.values()), seed=cfg.seed).as_dict()
                              for name, per_q in per_rm.items()},
            "recursive-plain": {"diff": round(diff.diff, 4), "ci_low": round(diff.ci_low, 4),
                                "ci_high": round(diff.ci_high, 4), "p_value": round(diff.p_value, 4)},
            "crowd_labels": {
                "unassisted": label_accuracy(crowd_label(DEFAULT_POOL, [
                    (one_claim_checked(q, a, c), one_claim_checked(q, b, c))
                    for (q, a, b), c in zip(pairs, checks, strict=True)], test_texts, rng), pairs),
                "assisted": label_accuracy(crowd_label(DEFAULT_POOL, [
                    (matches_helper(q, a, answers), matches_helper(q, b, answers)) for q, a, b in pairs],
                    test_texts, rng), pairs)},
            "helper_facts_right": round(sum(helper_right[f] for f in facts) / len(facts), 4),
            "helper_questions_all_right": round(sum(all(helper_right[f] for f in q.facts) for q in questions)
                                                / len(questions), 4),
        }
    summary = {
        "world_seed": cfg.world_seed, "model": base, "facts_per_question": cfg.facts,
        "train": {"questions": len(train_q), "pairs": len(train_pairs), "easy_pairs": len(easy_rows),
                  "helper_demonstrations": len(demos),
                  "helper_demonstrations_right": round(sum(is_right(q, a if w else b) for (q, a, b), w in
                                                           zip(easy_pairs, easy_labels, strict=True)) / len(demos), 4),
                  "labels_right": {"unassisted": label_accuracy(unassisted, train_pairs),
                                   "assisted": label_accuracy(assisted, train_pairs)}},
        "helper": {"facts_right_train_lands": _share(helper_right, lambda f: f[0] not in world.heldout_lands),
                   "facts_right_held_out_lands": _share(helper_right, lambda f: f[0] in world.heldout_lands)},
        "test": measured,
    }
    (out / "rrm.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _share(right: Mapping[Fact, bool], keep: Callable[[Fact], bool]) -> dict[str, Any]:
    from tether.core.stats import wilson_interval

    kept = [v for f, v in right.items() if keep(f)]
    return wilson_interval(sum(kept), len(kept)).as_dict()
