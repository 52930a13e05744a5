"""Labelling projects: their items, who labels what (overlap, gold questions), the labels, and what they add
up to (agreement, aggregation, exports that ``tether train rm|dpo|sft`` and ``tether guard train`` read).

A project has one kind of task:

- ``pairwise``: which of two responses is better (``{"choice": 0|1}``);
- ``ranking``: k responses best to worst (``{"order": [i, ...]}``);
- ``rating``: one response on a 1..``scale`` scale (``{"rating": n}``);
- ``flags``: which of the project's ``flags`` apply to a response (``{"flags": [...]}``);
- ``critique``: a free-text critique of a response, and optionally a better response
  (``{"critique": "...", "revision": "..."}``).

Items come from any tether output or a user's JSONL (:func:`item_from_row` reads the common shapes:
``prompt`` as text or messages; ``response``/``completion``; ``chosen``/``rejected``; ``responses``;
``response``/``revision`` of a critique run). Each item goes to ``overlap`` annotators; a row with a
``gold`` answer is a gold question, given to every annotator among the others, and each annotator's
accuracy on them is their quality score: an export leaves out the labels of annotators under ``gold_min``.

Assignment is atomic: an annotator takes an item under a lease in one transaction that locks the item's
row and counts the labels and live leases on it, so ``overlap`` holds with many annotators at once, on
SQLite and on PostgreSQL; a lease that runs out frees its place.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field

from tether.core.agreement import Level, bootstrap, krippendorff_alpha, per_annotator
from tether.core.config import Config
from tether.core.errors import UserError
from tether.data.aggregate import bradley_terry, dawid_skene, majority
from tether.serve.store import (
    STUDIO_ITEMS,
    STUDIO_LABELS,
    STUDIO_MEMBERS,
    STUDIO_PROJECTS,
    STUDIO_USERS,
    write_transaction,
)

Kind = Literal["pairwise", "ranking", "rating", "flags", "critique"]
KINDS: tuple[str, ...] = ("pairwise", "ranking", "rating", "flags", "critique")
Method = Literal["dawid-skene", "majority", "bradley-terry", "raw"]


class ProjectSpec(Config):
    """What a project asks and how its work is shared."""

    kind: Kind = Field(description="pairwise, ranking, rating, flags or critique")
    overlap: int = Field(3, ge=1, le=50, description="annotators per item (gold questions go to everyone)")
    scale: int = Field(5, ge=2, le=9, description="rating: the top of the 1..scale scale")
    flags: list[str] = Field(default_factory=lambda: ["harmful", "dishonest", "unhelpful", "refusal"],
                             max_length=9, description="flags: the flags an annotator may set (one key each)")
    gold_min: float = Field(0.7, ge=0.0, le=1.0, description="exports leave out annotators whose accuracy on gold "
                            "questions is below this (those with fewer than min_gold answers are kept)")
    min_gold: int = Field(3, ge=1, description="gold answers an annotator needs before gold_min applies")
    lease_s: float = Field(600.0, gt=0, description="seconds an annotator holds an item before it may go to another")
    instructions: str = Field("", max_length=4000, description="shown above every item")


@dataclass(frozen=True)
class Project:
    """A project and its spec."""

    id: str
    name: str
    spec: ProjectSpec
    created_at: float


@dataclass(frozen=True)
class Item:
    """One thing to label: ``prompt``, its ``responses`` (one, two, or k), the source row's other fields."""

    id: int
    project_id: str
    prompt: str
    responses: list[str]
    meta: dict[str, Any]
    gold: Any


def _text(prompt: Any) -> str:
    """A prompt as text: a string as it is, messages as ``role: content`` lines (the system's and the user's)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        if len(prompt) == 1:
            return str(prompt[0].get("content", ""))
        return "\n\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)
    raise ValueError("prompt: expected text or a list of messages")


def _reply(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[-1], dict):  # TRL's conversational completions
        return str(value[-1].get("content", ""))
    if not isinstance(value, str):
        raise ValueError("a response must be text")
    return value


def item_from_row(row: dict[str, Any], kind: str) -> tuple[dict[str, Any], Any]:
    """An item's payload (``prompt``, ``responses``, ``meta``) and gold answer (normalised, or None) from a
    row of JSONL, for a project of ``kind``.

    Raises:
        ValueError: the row has no prompt, or not the responses the kind needs, or a gold answer of the
            wrong form (the message names the field).
    """
    prompt_field = next((k for k in ("prompt", "messages", "goal", "question", "input") if k in row), None)
    if prompt_field is None:
        raise ValueError("no prompt (expected one of prompt, messages, goal, question, input)")
    prompt = row[prompt_field]
    if prompt_field == "messages" and isinstance(prompt, list) and prompt and prompt[-1].get("role") == "assistant":
        row = {**row, "response": prompt[-1].get("content", "")}  # an SFT row: the last message is the reply
        prompt = prompt[:-1]
    text = _text(prompt)
    if "responses" in row:
        responses = [_reply(r) for r in row["responses"]]
    elif "chosen" in row and "rejected" in row:
        # Shown in an order that does not give the label away: fixed per row (a hash), not always chosen first.
        pair = [_reply(row["chosen"]), _reply(row["rejected"])]
        flip = hashlib.sha256(json.dumps([text, *pair]).encode()).digest()[0] % 2 == 1
        responses = pair[::-1] if flip else pair
    elif "response" in row and "revision" in row and kind in ("pairwise", "ranking"):
        responses = [_reply(row["response"]), _reply(row["revision"])]
    else:
        key = next((k for k in ("response", "completion", "output", "reply", "revision") if k in row), None)
        if key is None:
            raise ValueError("no response (expected response, completion, responses, or chosen and rejected)")
        responses = [_reply(row[key])]
    need = {"pairwise": (2, 2), "ranking": (2, 9)}.get(kind, (1, 1))
    if not need[0] <= len(responses) <= need[1]:
        raise ValueError(f"a {kind} item needs {need[0]}{'' if need[0] == need[1] else f' to {need[1]}'} "
                         f"response{'s' if need[1] > 1 else ''}, this row has {len(responses)}")
    taken = {prompt_field, "responses", "chosen", "rejected", "response", "completion", "output", "reply", "revision",
             "gold"}
    meta = {k: v for k, v in row.items() if k not in taken and isinstance(v, str | int | float | bool)}
    return {"prompt": text, "responses": responses, "meta": meta}, row.get("gold")


def check_value(spec: ProjectSpec, responses: int, value: Any) -> dict[str, Any]:
    """A label in its project's form, or ValueError naming what is wrong. Gold answers are read the same way
    (and, for convenience, a bare number: pairwise 1 or 2, a rating, a ranking's 1-based order)."""
    if spec.kind == "pairwise":
        choice = value.get("choice") if isinstance(value, dict) else (value - 1 if isinstance(value, int) else None)
        if choice not in (0, 1) or isinstance(choice, bool):
            raise ValueError("a pairwise label is {\"choice\": 0 or 1}")
        return {"choice": choice}
    if spec.kind == "ranking":
        order = value.get("order") if isinstance(value, dict) else (
            [v - 1 for v in value] if isinstance(value, list) else None)
        if not isinstance(order, list) or sorted(order) != list(range(responses)):
            raise ValueError(f"a ranking is {{\"order\": [...]}}, every response 0..{responses - 1} once")
        return {"order": order}
    if spec.kind == "rating":
        rating = value.get("rating") if isinstance(value, dict) else value
        if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= spec.scale:
            raise ValueError(f"a rating is {{\"rating\": 1..{spec.scale}}}")
        return {"rating": rating}
    if spec.kind == "flags":
        flags = value.get("flags") if isinstance(value, dict) else value
        if not isinstance(flags, list) or any(f not in spec.flags for f in flags):
            raise ValueError(f"flags are {{\"flags\": [...]}} from {spec.flags}")
        return {"flags": sorted(set(flags))}
    critique = value.get("critique") if isinstance(value, dict) else None
    if not isinstance(critique, str) or not critique.strip():
        raise ValueError("a critique is {\"critique\": \"...\"} (and optionally \"revision\")")
    revision = value.get("revision") if isinstance(value, dict) else None
    return {"critique": critique.strip(), **({"revision": revision.strip()} if isinstance(revision, str)
                                               and revision.strip() else {})}


def categorical(spec: ProjectSpec, value: dict[str, Any]) -> Hashable:
    """A label as one category (for agreement and vote counting): the choice, the top of a ranking, the
    rating, the set of flags; None for critiques (free text has no category)."""
    if spec.kind == "pairwise":
        return int(value["choice"])
    if spec.kind == "ranking":
        return int(value["order"][0])
    if spec.kind == "rating":
        return int(value["rating"])
    if spec.kind == "flags":
        return "|".join(value["flags"])
    return None


class LabelError(Exception):
    """A label that cannot be taken: not a member, no such item, already labelled, or the wrong form."""


class Projects:
    """Projects, members, items and labels in the gateway's store."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # --- projects and members ---
    def create(self, name: str, spec: ProjectSpec) -> Project:
        """A new project.

        Raises:
            UserError: the name is taken or empty.
        """
        name = name.strip()
        if not name or len(name) > 200:
            raise UserError(f"project name {name!r}: 1 to 200 characters")
        project = Project(uuid.uuid4().hex, name, spec, time.time())
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(STUDIO_PROJECTS.insert().values(id=project.id, name=name, spec=spec.model_dump(),
                                                             created_at=project.created_at))
        except sa.exc.IntegrityError:
            raise UserError(f"project {name!r} exists already") from None
        return project

    def get(self, project_id: str) -> Project | None:
        """The project with this id."""
        return self._one(STUDIO_PROJECTS.c.id == project_id)

    def by_name(self, name: str) -> Project | None:
        """The project with this name."""
        return self._one(STUDIO_PROJECTS.c.name == name)

    def need(self, name_or_id: str) -> Project:
        """The project named (or with the id) ``name_or_id``; a one-line error when there is none."""
        project = self.by_name(name_or_id) or self.get(name_or_id)
        if project is None:
            raise UserError(f"no project named {name_or_id!r} (tether studio projects list)")
        return project

    def listing(self, user_id: str | None = None) -> list[Project]:
        """Every project (``user_id``: the ones that account is a member of), by name."""
        query = sa.select(STUDIO_PROJECTS).order_by(STUDIO_PROJECTS.c.name)
        if user_id is not None:
            query = query.join(STUDIO_MEMBERS, STUDIO_MEMBERS.c.project_id == STUDIO_PROJECTS.c.id).where(
                STUDIO_MEMBERS.c.user_id == user_id)
        with self.engine.connect() as conn:
            return [_project(r) for r in conn.execute(query).mappings()]

    def add_member(self, project: Project, user_id: str) -> bool:
        """Make an account a member (whether it was not one already)."""
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(STUDIO_MEMBERS.insert().values(project_id=project.id, user_id=user_id))
        except sa.exc.IntegrityError:
            return False
        return True

    def is_member(self, project_id: str, user_id: str) -> bool:
        """Whether the account is a member of the project."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(STUDIO_MEMBERS.c.user_id).where(
                STUDIO_MEMBERS.c.project_id == project_id, STUDIO_MEMBERS.c.user_id == user_id)).first() is not None

    # --- items ---
    def add_items(self, project: Project, rows: Iterable[tuple[str, Any]]) -> int:
        """Add rows, each with where it came from (``("FILE:LINE", row)``, as
        :func:`tether.data.io.jsonl_objects` reads them), as items: all or none; how many.

        Raises:
            UserError: a row that is not an item of this project's kind, naming where it came from.
        """
        now = time.time()
        values = []
        for where, row in rows:
            try:
                if not isinstance(row, dict):
                    raise ValueError("expected a JSON object")
                payload, gold = item_from_row(row, project.spec.kind)
                if gold is not None:
                    gold = check_value(project.spec, len(payload["responses"]), gold)
            except ValueError as exc:
                raise UserError(f"{where}: {exc}") from None
            values.append({"project_id": project.id, "payload": payload, "gold": gold, "created_at": now})
        if values:
            with write_transaction(self.engine) as conn:
                conn.execute(STUDIO_ITEMS.insert(), values)
        return len(values)

    def item(self, item_id: int) -> Item | None:
        """The item with this id."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(STUDIO_ITEMS).where(STUDIO_ITEMS.c.id == item_id)).mappings().first()
        return None if row is None else _item(row)

    def items(self, project: Project) -> list[Item]:
        """The project's items in order."""
        with self.engine.connect() as conn:
            return [_item(r) for r in conn.execute(sa.select(STUDIO_ITEMS).where(
                STUDIO_ITEMS.c.project_id == project.id).order_by(STUDIO_ITEMS.c.id)).mappings()]

    # --- assignment and labels ---
    def next_item(self, project: Project, user_id: str, *, now: float | None = None) -> Item | None:
        """The item ``user_id`` should label now, taken under a lease: the one they hold, else the first item
        they have not labelled that is a gold question or has fewer than ``overlap`` labels and live leases;
        None when they are done."""
        now = time.time() if now is None else now
        items, labels = STUDIO_ITEMS.c, STUDIO_LABELS.c
        with write_transaction(self.engine) as conn:
            held = conn.execute(sa.select(labels.item_id).where(
                labels.project_id == project.id, labels.user_id == user_id, labels.value.is_(None),
                labels.lease_until >= now).order_by(labels.item_id).limit(1)).scalar()
            if held is not None:
                return _item(conn.execute(sa.select(STUDIO_ITEMS).where(items.id == held)).mappings().one())
            # An annotator's own lease that ran out is dropped: the item may come back to them or go to another.
            conn.execute(STUDIO_LABELS.delete().where(labels.project_id == project.id, labels.user_id == user_id,
                                                      labels.value.is_(None), labels.lease_until < now))
            active = (sa.select(sa.func.count()).select_from(STUDIO_LABELS)
                      .where(labels.item_id == items.id, sa.or_(labels.value.is_not(None), labels.lease_until >= now))
                      .scalar_subquery())
            mine = sa.exists().where(labels.item_id == items.id, labels.user_id == user_id)
            candidates = conn.execute(sa.select(items.id, items.gold).where(
                items.project_id == project.id, ~mine,
                sa.or_(items.gold.is_not(None), active < project.spec.overlap)).order_by(items.id).limit(50)).all()
            for item_id, gold in candidates:
                # Lock the item, then count again: two annotators cannot both take its last place.
                conn.execute(sa.select(items.id).where(items.id == item_id).with_for_update())
                taken = conn.execute(sa.select(sa.func.count()).select_from(STUDIO_LABELS).where(
                    labels.item_id == item_id, sa.or_(labels.value.is_not(None), labels.lease_until >= now))).scalar()
                if gold is None and (taken or 0) >= project.spec.overlap:
                    continue
                conn.execute(STUDIO_LABELS.insert().values(item_id=item_id, user_id=user_id, project_id=project.id,
                                                           lease_until=now + project.spec.lease_s))
                return _item(conn.execute(sa.select(STUDIO_ITEMS).where(items.id == item_id)).mappings().one())
        return None

    def label(self, project: Project, user_id: str, item_id: int, value: Any, *, now: float | None = None
              ) -> dict[str, Any]:
        """Record ``user_id``'s label on an item they took (a label after the lease ran out still counts, if
        nobody's label replaced the lease); the label in its normal form.

        Raises:
            LabelError: the item is not in the project, was not taken by this annotator, or is labelled
                already (a label is never overwritten), or the value is not a label of this kind.
        """
        now = time.time() if now is None else now
        item = self.item(item_id)
        if item is None or item.project_id != project.id:
            raise LabelError(f"item {item_id} is not in project {project.name!r}")
        try:
            clean = check_value(project.spec, len(item.responses), value)
        except ValueError as exc:
            raise LabelError(str(exc)) from None
        labels = STUDIO_LABELS.c
        with write_transaction(self.engine) as conn:
            row = conn.execute(sa.select(labels.value, labels.lease_until).where(
                labels.item_id == item_id, labels.user_id == user_id)).first()
            if row is None:
                raise LabelError(f"item {item_id} was not given to you (take the next item)")
            if row.value is not None:
                raise LabelError(f"item {item_id}: you labelled it already (labels are never overwritten)")
            taken_at = row.lease_until - project.spec.lease_s
            conn.execute(STUDIO_LABELS.update().where(labels.item_id == item_id, labels.user_id == user_id,
                                                      labels.value.is_(None))
                         .values(value=clean, labelled_at=now, seconds=round(max(0.0, now - taken_at), 3)))
        return clean

    def labels(self, project: Project) -> list[dict[str, Any]]:
        """Every label given in the project: ``item``, ``annotator`` (name), ``value``, ``seconds``, ``at``."""
        labels, users = STUDIO_LABELS.c, STUDIO_USERS.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(labels.item_id, users.name, labels.value, labels.seconds, labels.labelled_at)
                                .join(STUDIO_USERS, users.id == labels.user_id)
                                .where(labels.project_id == project.id, labels.value.is_not(None))
                                .order_by(labels.item_id, labels.labelled_at)).all()
        return [{"item": r[0], "annotator": r[1], "value": r[2], "seconds": r[3], "at": r[4]} for r in rows]

    def progress(self, project: Project, user_id: str | None = None) -> dict[str, int]:
        """Items, gold questions, labels given, items with ``overlap`` labels; and ``mine`` for ``user_id``."""
        items, labels = STUDIO_ITEMS.c, STUDIO_LABELS.c
        with self.engine.connect() as conn:
            n_items = conn.execute(sa.select(sa.func.count()).where(items.project_id == project.id)).scalar() or 0
            n_gold = conn.execute(sa.select(sa.func.count()).where(items.project_id == project.id,
                                                                   items.gold.is_not(None))).scalar() or 0
            per_item = conn.execute(sa.select(labels.item_id, sa.func.count()).where(
                labels.project_id == project.id, labels.value.is_not(None)).group_by(labels.item_id)).all()
            mine = 0 if user_id is None else conn.execute(sa.select(sa.func.count()).where(
                labels.project_id == project.id, labels.user_id == user_id, labels.value.is_not(None))).scalar() or 0
        return {"items": int(n_items), "gold": int(n_gold), "labels": sum(int(n) for _, n in per_item),
                "complete": sum(1 for _, n in per_item if n >= project.spec.overlap), "mine": int(mine)}

    # --- quality, agreement, aggregation ---
    def gold_scores(self, project: Project) -> dict[str, dict[str, float]]:
        """Each annotator's answers on gold questions: ``{"correct", "n", "accuracy"}`` (ratings and rankings
        count as right on the same category: the rating, the top choice)."""
        gold = {it.id: it.gold for it in self.items(project) if it.gold is not None}
        scores: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for row in self.labels(project):
            if row["item"] in gold:
                right = categorical(project.spec, row["value"]) == categorical(project.spec, gold[row["item"]])
                scores[row["annotator"]][0] += int(right)
                scores[row["annotator"]][1] += 1
        return {a: {"correct": c, "n": n, "accuracy": c / n} for a, (c, n) in sorted(scores.items())}

    def trusted(self, project: Project) -> set[str]:
        """Annotators whose labels count in exports: at or above ``gold_min`` on gold, or with fewer than
        ``min_gold`` gold answers."""
        scores = self.gold_scores(project)
        names = {row["annotator"] for row in self.labels(project)}
        return {a for a in names if a not in scores or scores[a]["n"] < project.spec.min_gold
                or scores[a]["accuracy"] >= project.spec.gold_min}

    def agreement(self, project: Project, *, resamples: int = 500, seed: int = 0) -> dict[str, Any]:
        """Krippendorff's alpha over the non-gold items (nominal; ordinal for ratings) with a bootstrap
        interval (``resamples`` 0: the value alone), and each annotator's kappa against the others, gold
        accuracy, labels and median seconds."""
        if project.spec.kind == "critique":
            return {"alpha": None, "annotators": {}}
        gold = {it.id for it in self.items(project) if it.gold is not None}
        rows = self.labels(project)
        annotations = [(r["item"], r["annotator"], categorical(project.spec, r["value"])) for r in rows
                       if r["item"] not in gold]
        level: Level = "ordinal" if project.spec.kind == "rating" else "nominal"
        alpha: dict[str, Any] | None = None
        if len({a[0] for a in annotations}) >= 2 and len({a[1] for a in annotations}) >= 2:
            try:
                if resamples:
                    alpha = bootstrap(lambda a: krippendorff_alpha(a, level), annotations, resamples=resamples,
                                      seed=seed).__dict__ | {"level": level}
                else:  # the point estimate alone (a page over a large project: the interval costs seconds)
                    alpha = {"value": krippendorff_alpha(annotations, level), "ci_low": None, "ci_high": None,
                             "n": len({a[0] for a in annotations}), "resamples": 0, "level": level}
            except (ValueError, ZeroDivisionError):  # nothing pairable, or a single category throughout
                alpha = None
        kappas = per_annotator(annotations, seed=seed) if annotations else {}
        golds = self.gold_scores(project)
        seconds: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            seconds[r["annotator"]].append(r["seconds"] or 0.0)
        who = sorted(seconds)
        return {"alpha": alpha, "annotators": {a: {
            "labels": len(seconds[a]), "median_seconds": sorted(seconds[a])[len(seconds[a]) // 2],
            "kappa_vs_others": kappas.get(a), "gold": golds.get(a)} for a in who}}

    def export(self, project: Project, fmt: str, *, method: Method = "dawid-skene", seed: int = 0,
               min_rating: int | None = None) -> list[dict[str, Any]]:
        """Rows for training or analysis:

        - ``raw``: every label, with its item (gold questions included, marked);
        - ``preference`` (pairwise, ranking): TRL preference rows ``prompt``/``chosen``/``rejected``, one per
          item by ``method`` (``dawid-skene``, ``majority``; rankings: ``bradley-terry`` with each
          annotator's reliability, every pair of the aggregate order), or ``raw``: one per label;
        - ``sft``: ``prompt``/``completion``: pairwise, the aggregate's chosen response; rating, responses
          whose mean rating is at least ``min_rating`` (default: the scale's top but one); critique, the
          revisions annotators wrote;
        - ``guard`` (flags): ``text``/``label``/``category``, unsafe where the aggregate sets a flag.

        Gold questions are left out of everything but ``raw``; so are labels of annotators under the gold
        threshold (:meth:`trusted`).

        Raises:
            UserError: a format this kind of project cannot give.
        """
        items = {it.id: it for it in self.items(project)}
        rows = self.labels(project)
        if fmt == "raw":
            return [{"project": project.name, "item": r["item"], "annotator": r["annotator"], "value": r["value"],
                     "seconds": r["seconds"], "labelled_at": r["at"], "gold": items[r["item"]].gold,
                     "prompt": items[r["item"]].prompt, "responses": items[r["item"]].responses,
                     **items[r["item"]].meta} for r in rows]
        kind = project.spec.kind
        allowed = {"pairwise": ("preference", "sft"), "ranking": ("preference",), "rating": ("sft",),
                   "flags": ("guard",), "critique": ("sft",)}[kind]
        if fmt not in allowed:
            raise UserError(f"a {kind} project exports {', '.join(('raw', *allowed))}, not {fmt!r}")
        trusted = self.trusted(project)
        rows = [r for r in rows if items[r["item"]].gold is None and r["annotator"] in trusted]
        if kind == "critique":
            return [{"prompt": items[r["item"]].prompt, "completion": r["value"]["revision"],
                     "critique": r["value"]["critique"], "annotator": r["annotator"]}
                    for r in rows if r["value"].get("revision")]
        if kind == "rating":
            threshold = project.spec.scale - 1 if min_rating is None else min_rating
            ratings: dict[int, list[int]] = defaultdict(list)
            for r in rows:
                ratings[r["item"]].append(r["value"]["rating"])
            return [{"prompt": items[i].prompt, "completion": items[i].responses[0],
                     "mean_rating": sum(v) / len(v), "labels": len(v)}
                    for i, v in sorted(ratings.items()) if sum(v) / len(v) >= threshold]
        if kind == "ranking":
            return self._ranking_pairs(items, rows, method, seed)
        annotations = [(r["item"], r["annotator"], categorical(project.spec, r["value"])) for r in rows]
        if kind == "flags":
            return self._flag_rows(project, items, rows, method, seed)
        if method == "raw":
            decided = [(a[0], a[2], a[1]) for a in annotations]
        else:
            if method not in ("dawid-skene", "majority"):
                raise UserError(f"a pairwise project aggregates by dawid-skene, majority or raw, not {method!r}")
            labels, used = _aggregate(annotations, method, seed)
            votes = Counter(a[0] for a in annotations)
            decided = [(i, v, f"{used} of {votes[i]}") for i, v in sorted(labels.items(), key=lambda kv: str(kv[0]))]
        out = []
        for item_id, choice, by in decided:
            item = items[int(str(item_id))]
            chosen, rejected = item.responses[int(str(choice))], item.responses[1 - int(str(choice))]
            if fmt == "sft":
                out.append({"prompt": item.prompt, "completion": chosen, "item": item.id, "by": by, **item.meta})
            else:
                out.append({"prompt": item.prompt, "chosen": chosen, "rejected": rejected, "item": item.id, "by": by,
                            **item.meta})
        return out

    def _ranking_pairs(self, items: dict[int, Item], rows: Sequence[dict[str, Any]], method: str, seed: int
                       ) -> list[dict[str, Any]]:
        def pairs(order: Sequence[int]) -> list[tuple[int, int]]:
            return [(order[a], order[b]) for a in range(len(order)) for b in range(a + 1, len(order))]

        out = []
        if method == "raw":
            for r in rows:
                item = items[r["item"]]
                for win, lose in pairs(r["value"]["order"]):
                    out.append({"prompt": item.prompt, "chosen": item.responses[win], "rejected": item.responses[lose],
                                "item": item.id, "by": f"annotator:{r['annotator']}"})
            return out
        if method not in ("bradley-terry", "majority"):
            raise UserError(f"a ranking project aggregates by bradley-terry, majority or raw, not {method!r}")
        comparisons = [((r["item"], w), (r["item"], lose), r["annotator"]) for r in rows
                       for w, lose in pairs(r["value"]["order"])]
        if not comparisons:
            return []
        if method == "bradley-terry":
            scores = bradley_terry(comparisons, reliability=True, seed=seed).scores
        else:  # Borda: how many others each response beat, over every annotator
            wins = Counter(w for w, _, _ in comparisons)
            scores = {o: float(wins[o]) for c in comparisons for o in c[:2]}
        for item_id in sorted({r["item"] for r in rows}):
            item = items[item_id]
            order = sorted(range(len(item.responses)), key=lambda i: -scores.get((item_id, i), 0.0))
            for win, lose in pairs(order):
                out.append({"prompt": item.prompt, "chosen": item.responses[win], "rejected": item.responses[lose],
                            "item": item.id, "by": method, **item.meta})
        return out

    def _flag_rows(self, project: Project, items: dict[int, Item], rows: Sequence[dict[str, Any]], method: str,
                   seed: int) -> list[dict[str, Any]]:
        # Each flag aggregated on its own (set or not, per item), then one row per item: unsafe where any is set.
        decided: dict[str, dict[Hashable, Hashable]] = {}
        for flag in project.spec.flags:
            annotations = [(r["item"], r["annotator"], flag in r["value"]["flags"]) for r in rows]
            if annotations:
                decided[flag] = _aggregate(annotations, method, seed)[0]
        out = []
        for item_id in sorted({r["item"] for r in rows}):
            item = items[item_id]
            on = [flag for flag, labels in decided.items() if labels.get(item_id)]
            out.append({"text": item.responses[0], "label": "unsafe" if on else "safe",
                        "category": on[0] if on else "none", "flags": on, "prompt": item.prompt, "item": item.id})
        return out

    def _one(self, where: sa.ColumnElement[bool]) -> Project | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(STUDIO_PROJECTS).where(where)).mappings().first()
        return None if row is None else _project(row)


def _aggregate(annotations: Sequence[tuple[Hashable, Hashable, Hashable]], method: str, seed: int
               ) -> tuple[dict[Hashable, Hashable], str]:
    """Labels per item by ``method``, and the method used: Dawid-Skene needs items with two or more labels to
    learn anything about annotators (with one label per item its confusion matrices are not identifiable, and
    its smoothing can overrule the only label there is), so there it is the label itself (majority of one)."""
    if method == "dawid-skene" and annotations and max(Counter(a[0] for a in annotations).values()) > 1:
        return dict(dawid_skene(annotations).labels), "dawid-skene"
    return majority(annotations, seed=seed), "majority"


def _project(row: Any) -> Project:
    return Project(row["id"], row["name"], ProjectSpec.model_validate(row["spec"]), row["created_at"])


def _item(row: Any) -> Item:
    payload = row["payload"]
    return Item(row["id"], row["project_id"], payload["prompt"], list(payload["responses"]), dict(payload.get("meta",
                                                                                                      {})), row["gold"])
