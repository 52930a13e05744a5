"""Model editing measured on the world (``tether experiment editing``).

On one world's base model, for each method (ROME, MEMIT, AlphaEdit, with their shipped ``METHOD/world``
configs):

- **single edits**: the first ``single`` fact rewrites (:func:`tether.world.edits.fact_edits`), each on the
  original model alone (``mode=independent``): efficacy by generation, paraphrase generalisation (the
  question in chat; the sentence after another fact of the land) and neighbourhood locality (the same
  attribute of other lands; the land's other attributes), with intervals, split by kind;
- **sequential edits**: the first ``sequential`` rewrites applied ``batch`` at a time to one model, with
  capability (held-text NLL), the edits so far and every neighbour re-checked after each batch;
- **removing a behaviour**: for ``hazards`` train hazard items (one per harm category), one edit makes the
  model refuse that item (:func:`tether.world.edits.hazard_edit`, with ``hazard_method``). Each edited model
  and the original answer every hazard and look-alike request, sampled; the gold grader says which replies
  give a procedure (harmful compliance) and which look-alikes are answered; the edited item is compared
  with the others before and after, and the facts are re-asked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.pipelines.weak_to_strong import with_world_seed

# Which paraphrase and neighbour of a fact edit is which (the order tether.world.edits.fact_edits writes).
PARAPHRASE_KINDS = ("chat question", "after another fact")
NEIGHBOUR_KINDS = ("other land", "other land", "other attribute", "other attribute", "look-alike fact")


class EditingConfig(Config):
    """``tether experiment editing``."""

    world_seed: int = Field(0, description="which world (its facts, hazards and base model)")
    model: str = Field("world:base", description="the model edited")
    methods: list[str] = Field(["rome", "memit", "alphaedit"], min_length=1, description="editing recipes, each "
                               "run with its METHOD/world config")
    single: int = Field(60, ge=1, description="fact rewrites judged one at a time on the original model")
    sequential: int = Field(100, ge=1, description="fact rewrites applied one after another to one model")
    batch: int = Field(10, ge=1, description="sequential edits per step (capability re-checked after each)")
    hazards: int = Field(4, ge=0, description="train hazard items whose procedure one edit removes, one at a time")
    hazard_method: str = Field("rome", description="the editing recipe that removes a hazard item")
    samples: int = Field(4, ge=1, description="sampled replies per hazard / look-alike request")
    set: dict[str, list[str]] = Field(default_factory=dict, description="extra overrides per method")
    seed: int = 0
    out: str = Field("runs/editing", description="experiment directory")


def _show(cfg: EditingConfig, summary: dict[str, Any]) -> list[str]:
    from tether.pipelines.stages import shown_rate as pct

    lines = []
    for method, result in summary["single"].items():
        after = result["after"]
        lines.append(f"{method} single: efficacy {pct(after['efficacy'])}, paraphrase {pct(after['paraphrase'])}, "
                     f"neighbourhood {pct(after['neighbourhood'])}")
    for method, result in summary["sequential"].items():
        last = result["capability"]["checks"][-1]
        lines.append(f"{method} after {last['edits']} sequential edits: efficacy {pct(result['after']['efficacy'])}, "
                     f"neighbourhood {pct(result['after']['neighbourhood'])}, token NLL "
                     f"{result['capability']['token_nll_before']} -> {last['token_nll']}")
    if summary.get("hazard"):
        h = summary["hazard"]
        lines.append(f"hazard removal ({cfg.hazard_method}): edited item's harmful compliance "
                     f"{pct(h['edited']['before'])} -> {pct(h['edited']['after'])}; other items "
                     f"{pct(h['others']['before'])} -> {pct(h['others']['after'])}")
    lines.append(f"table: {cfg.out}/editing.json")
    return lines


@recipe("editing", group="experiment", config=EditingConfig,
        summary="Model editing on gold: ROME, MEMIT and AlphaEdit rewriting the world's facts (single and 100 "
        "sequential edits) and removing one hazard item's procedure while the rest stays.",
        example="tether experiment editing --set world_seed=1 --out runs/editing-1",
        produces={"editing": output("editing.json")}, show=_show)
def run(cfg: EditingConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``editing.json``."""
    run_dir = RunDir(cfg.out, command="experiment editing", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def _edit(method: str, base: str, requests: Path, texts: Path, out: Path, overrides: list[str]) -> dict[str, Any]:
    from tether.core.config import load_config
    from tether.core.recipes import RECIPES
    from tether.core.runs import run_stage

    entry = RECIPES.get(method)
    cfg = load_config(entry.config, f"{method}/world", [f"model.path={base}", f"requests={requests}",
                                                        f"statistics.data={texts}", *overrides, f"out={out}"])
    run_stage(cfg, entry.run)
    return dict(json.loads((out / "edit.json").read_text()))


def by_kind(edits: Path, field: str, key: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    """The rate of ``key`` among each request's ``field`` entries (paraphrases or neighbours) after the edit,
    split by their position's kind, with a bootstrap interval over requests (neighbours that are the rewrite
    prompt of an edit made left out)."""
    from tether.core.stats import bootstrap_mean

    rows = [json.loads(line) for line in edits.read_text().splitlines()]
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(kinds):
        values = [[float(x[key]) for i, x in enumerate(r["after"][field])
                   if i < len(kinds) and kinds[i] == kind and not x.get("edited")] for r in rows]
        values = [v for v in values if v]
        if values:
            out[kind] = bootstrap_mean(values).as_dict()
    return out


def _experiment(cfg: EditingConfig, out: Path) -> dict[str, Any]:
    from tether.data.io import write_jsonl
    from tether.world.corpus import corpus_documents
    from tether.world.edits import fact_edits
    from tether.world.spec import WorldConfig, build_world

    world = build_world(WorldConfig(seed=cfg.world_seed))
    base = with_world_seed(cfg.model, cfg.world_seed)
    requests = out / "fact-edits.jsonl"
    write_jsonl(requests, fact_edits(world, seed=cfg.seed), only_if_changed=True)
    texts = out / "texts.jsonl"
    if not texts.is_file():  # text past the 50,000 documents a world build pretrains on
        documents = list(corpus_documents(world, 51_200))[50_000:]
        write_jsonl(texts, [{"text": d} for d in documents])

    summary: dict[str, Any] = {"world_seed": cfg.world_seed, "model": base, "single": {}, "sequential": {},
                               "single_by_kind": {}}
    for method in cfg.methods:
        extra = cfg.set.get(method, [])
        single_dir = out / f"{method}-single"
        summary["single"][method] = _edit(method, base, requests, texts, single_dir,
                                          ["mode=independent", f"limit={cfg.single}", *extra])
        summary["single_by_kind"][method] = {
            "paraphrase": by_kind(single_dir / "edits.jsonl", "paraphrases", "success", PARAPHRASE_KINDS),
            "neighbourhood": by_kind(single_dir / "edits.jsonl", "neighbours", "kept", NEIGHBOUR_KINDS)}
        summary["sequential"][method] = _edit(method, base, requests, texts, out / f"{method}-sequential",
                                              ["mode=sequential", f"limit={cfg.sequential}", f"batch={cfg.batch}",
                                               *extra])
    if cfg.hazards:
        summary["hazard"] = _hazards(cfg, world, base, texts, out)
    (out / "editing.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _hazards(cfg: EditingConfig, world: Any, base: str, texts: Path, out: Path) -> dict[str, Any]:
    """Remove each chosen item's procedure with one edit; sample every hazard and look-alike request before
    and after; gold rates for the edited item, the other items and the look-alikes, and the facts re-asked."""
    from tether.core.stats import bootstrap_mean
    from tether.data.io import write_jsonl
    from tether.world.edits import hazard_edit
    from tether.world.spec import HARM_CATEGORIES

    chosen = [next(h for h in world.hazards_in("train") if h.category == c) for c in HARM_CATEGORIES][: cfg.hazards]
    original = _answers(world, base, cfg)
    per_item = []
    clusters: dict[str, dict[str, list[list[float]]]] = {
        k: {"before": [], "after": []} for k in ("edited", "others", "edited_lookalike", "other_lookalikes")}
    facts: dict[str, list[float]] = {"before": [], "after": []}
    for hazard in chosen:
        name = hazard.name.replace(" ", "-")
        requests = out / f"hazard-{name}.jsonl"
        write_jsonl(requests, [hazard_edit(world, hazard)], only_if_changed=True)
        edit_dir = out / f"hazard-{name}"
        edited = _edit(cfg.hazard_method, base, requests, texts, edit_dir,
                       ["mode=sequential", "batch=1", *cfg.set.get(cfg.hazard_method, [])])
        answers = _answers(world, str(edit_dir / "model"), cfg)
        split = {"edited": lambda key, h=hazard: key[0] == "hazard" and key[1] == h.name,
                 "others": lambda key, h=hazard: key[0] == "hazard" and key[1] != h.name,
                 "edited_lookalike": lambda key, h=hazard: key[0] == "benign" and key[1] == h.root,
                 "other_lookalikes": lambda key, h=hazard: key[0] == "benign" and key[1] != h.root}
        item = {"item": hazard.name, "edit": {"efficacy": edited["after"]["efficacy"]["value"],
                                              "paraphrase": edited["after"].get("paraphrase", {}).get("value")}}
        for group, belongs in split.items():
            for when, source in (("before", original), ("after", answers)):
                values = [v for key, v in source["prompts"].items() if belongs(key)]
                clusters[group][when].extend(values)
                item[f"{group}_{when}"] = round(sum(map(sum, values)) / max(1, sum(map(len, values))), 4)
        facts["before"].append(original["facts"])
        facts["after"].append(answers["facts"])
        per_item.append(item)
    return {"method": cfg.hazard_method, "items": per_item,
            **{group: {when: bootstrap_mean(v).as_dict() for when, v in parts.items()}
               for group, parts in clusters.items()},
            "measures": {"edited": "harmful compliance", "others": "harmful compliance",
                         "edited_lookalike": "answered correctly", "other_lookalikes": "answered correctly"},
            "fact_accuracy": {when: round(sum(v) / len(v), 4) for when, v in facts.items()}}


def _answers(world: Any, model_dir: str, cfg: EditingConfig) -> dict[str, Any]:
    """Sampled replies of ``model_dir`` to every hazard request (harmful compliance per reply, by (hazard,
    item, template)) and every look-alike request (answered correctly, by (benign, root, template)), and its
    greedy accuracy on every land fact (the encyclopedia sentence)."""
    import torch

    from tether.edit.evaluate import continuations, starts_with
    from tether.models.generation import GenerationSettings, HFGenerator
    from tether.models.loading import ModelConfig, load_model_and_tokenizer
    from tether.world.edits import ATTRIBUTES
    from tether.world.families import BENIGN_TEMPLATES, HAZARD_TEMPLATES, WorldItem
    from tether.world.grader import grade

    model, tokenizer = load_model_and_tokenizer(ModelConfig(path=model_dir))
    model.eval()
    items: list[tuple[tuple[str, str, int], WorldItem]] = []
    for hazard in world.hazards:
        for t, template in enumerate(HAZARD_TEMPLATES):
            items.append((("hazard", hazard.name, t), WorldItem(
                id=f"hazard:{hazard.name}:{t}", family="hazard", split=hazard.split,
                prompt=[{"role": "user", "content": template.format(name=hazard.name)}],
                gold={"item": hazard.name, "secret": hazard.secret})))
    for root, thing in world.benign.items():
        for t, template in enumerate(BENIGN_TEMPLATES["train"]):
            items.append((("benign", root, t), WorldItem(
                id=f"benign:{root}:{t}", family="benign", split="train",
                prompt=[{"role": "user", "content": template.format(name=thing.name)}],
                gold={"subject": f"The {thing.name}", "fact": thing.fact})))
    settings = GenerationSettings(max_new_tokens=40, temperature=1.0, seed=cfg.seed)
    prompts = [it.prompt for _, it in items for _ in range(cfg.samples)]
    with torch.no_grad():
        replies = HFGenerator(model, tokenizer).generate(prompts, settings)
    scored: dict[tuple[str, str, int], list[float]] = {}
    for i, (key, item) in enumerate(items):
        for reply in replies[i * cfg.samples: (i + 1) * cfg.samples]:
            label = grade(item, reply.text).label
            wanted = "harmful-compliance" if key[0] == "hazard" else "correct"
            scored.setdefault(key, []).append(float(label == wanted))
    facts = [(f"The {a} of {land.name} is", getattr(land, a)) for land in world.lands for a in ATTRIBUTES]
    said = continuations(model, tokenizer, [p for p, _ in facts], 6)
    accuracy = sum(starts_with(s, v) for s, (_, v) in zip(said, facts, strict=True)) / len(facts)
    return {"prompts": scored, "facts": accuracy}
