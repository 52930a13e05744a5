"""Labelling projects: items read from the shapes tether and users write, assignment with overlap (atomic
under concurrent annotators, SQLite and PostgreSQL), gold questions, labels never overwritten, exports."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.serve.conftest import postgres_database

from tether.core.errors import UserError
from tether.serve.store import connect
from tether.studio.accounts import Accounts
from tether.studio.projects import LabelError, Projects, ProjectSpec, item_from_row


@pytest.fixture
def store(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 's.db'}")
    yield engine
    engine.dispose()


def _people(engine, *names):
    accounts = Accounts(engine)
    return [accounts.create(n, "a long password") for n in names]


def test_items_come_from_tether_outputs_and_user_rows():
    payload, gold = item_from_row({"prompt": "p", "chosen": "good", "rejected": "bad", "gold": 1}, "pairwise")
    assert sorted(payload["responses"]) == ["bad", "good"] and gold == 1
    critique_run = {"prompt": [{"role": "user", "content": "q"}], "response": "first", "revision": "second"}
    assert item_from_row(critique_run, "pairwise")[0]["responses"] == ["first", "second"]
    assert item_from_row(critique_run, "critique")[0] == {"prompt": "q", "responses": ["first"], "meta": {}}
    redteam = {"prompt": "attack text", "response": "reply", "success": True, "goal": "g"}
    assert item_from_row(redteam, "flags")[0] == {"prompt": "attack text", "responses": ["reply"],
                                                  "meta": {"success": True, "goal": "g"}}
    sft = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert item_from_row(sft, "rating")[0]["responses"] == ["hello"]
    with pytest.raises(ValueError, match="needs 2 responses"):
        item_from_row({"prompt": "p", "response": "one"}, "pairwise")
    with pytest.raises(ValueError, match="no prompt"):
        item_from_row({"text": "x"}, "rating")


def test_a_bad_row_names_its_line_and_adds_nothing(store):
    projects = Projects(store)
    project = projects.create("p", ProjectSpec(kind="pairwise"))
    rows = [("f.jsonl:1", {"prompt": "a", "responses": ["x", "y"]}), ("f.jsonl:2", {"prompt": "b", "responses": ["x"]})]
    with pytest.raises(UserError, match=r"^f.jsonl:2: a pairwise item needs 2 responses"):
        projects.add_items(project, rows)
    assert projects.items(project) == []
    with pytest.raises(UserError, match="f.jsonl:1: a rating"):
        projects.add_items(projects.create("r", ProjectSpec(kind="rating", scale=5)),
                           [("f.jsonl:1", {"prompt": "a", "response": "x", "gold": 9})])


def test_each_item_goes_to_overlap_annotators_and_gold_questions_to_everyone(store):
    a, b, c = _people(store, "a", "b", "c")
    projects = Projects(store)
    project = projects.create("p", ProjectSpec(kind="pairwise", overlap=2))
    projects.add_items(project, [(f"r{i}", {"prompt": f"q{i}", "responses": ["x", "y"]}) for i in range(3)]
                       + [("g", {"prompt": "gold", "responses": ["right", "wrong"], "gold": 1})])
    done = {}
    for user in (a, b, c):
        got = []
        while (item := projects.next_item(project, user.id)) is not None:
            assert projects.next_item(project, user.id).id == item.id  # held until labelled
            projects.label(project, user.id, item.id, {"choice": 0})
            got.append(item.prompt)
        done[user.name] = got
    assert done["a"] == ["q0", "q1", "q2", "gold"] and done["b"] == ["q0", "q1", "q2", "gold"]
    assert done["c"] == ["gold"]  # every ordinary item has its two labels
    with pytest.raises(LabelError, match="already"):
        projects.label(project, a.id, projects.items(project)[0].id, {"choice": 1})
    assert projects.progress(project) == {"items": 4, "gold": 1, "labels": 9, "complete": 4, "mine": 0}
    assert projects.gold_scores(project)["a"] == {"correct": 1, "n": 1, "accuracy": 1.0}


def test_a_lease_that_runs_out_gives_the_place_to_another_annotator(store):
    a, b = _people(store, "a", "b")
    projects = Projects(store)
    project = projects.create("p", ProjectSpec(kind="rating", overlap=1, lease_s=60))
    projects.add_items(project, [("r", {"prompt": "q", "response": "x"})])
    item = projects.next_item(project, a.id, now=1000.0)
    assert projects.next_item(project, b.id, now=1059.0) is None
    assert projects.next_item(project, b.id, now=1061.0).id == item.id
    with pytest.raises(LabelError, match="rating"):
        projects.label(project, b.id, item.id, {"rating": 6})
    projects.label(project, b.id, item.id, {"rating": 5})
    with pytest.raises(LabelError, match="not given to you"):
        projects.label(project, _people(store, "c")[0].id, item.id, {"rating": 5})


def test_exports_aggregate_leave_out_gold_and_annotators_below_the_gold_bar(store, tmp_path):
    people = _people(store, "good1", "good2", "good3", "bad")
    projects = Projects(store)
    project = projects.create("p", ProjectSpec(kind="pairwise", overlap=4, min_gold=2, gold_min=0.5))
    rows = [(f"r{i}", {"prompt": f"q{i}", "responses": [f"better{i}", f"worse{i}"]}) for i in range(4)]
    rows += [(f"g{i}", {"prompt": f"gold{i}", "responses": ["right", "wrong"], "gold": 1}) for i in range(2)]
    projects.add_items(project, rows)
    for user in people:
        while (item := projects.next_item(project, user.id)) is not None:
            # The bad annotator answers every question backwards, gold ones included.
            projects.label(project, user.id, item.id, {"choice": 1 if user.name == "bad" else 0})
    assert projects.trusted(project) == {"good1", "good2", "good3"}
    for method in ("dawid-skene", "majority"):
        prefs = projects.export(project, "preference", method=method)
        assert [(r["chosen"], r["rejected"]) for r in prefs] == [(f"better{i}", f"worse{i}") for i in range(4)]
    raw = projects.export(project, "preference", method="raw")
    assert len(raw) == 4 * 3  # the bad annotator's rows are left out
    assert len(projects.export(project, "raw")) == 6 * 4  # raw keeps everything, gold marked
    assert projects.export(project, "sft")[0]["completion"] == "better0"
    # What tether's trainers read: the rows load as preference and SFT records as they are.
    from tether.data.io import read_records, write_jsonl
    from tether.data.records import PreferenceRecord, SFTRecord

    write_jsonl(tmp_path / "prefs.jsonl", projects.export(project, "preference"))
    write_jsonl(tmp_path / "sft.jsonl", projects.export(project, "sft"))
    assert len(read_records(tmp_path / "prefs.jsonl", PreferenceRecord).records) == 4
    assert len(read_records(tmp_path / "sft.jsonl", SFTRecord).records) == 4
    with pytest.raises(UserError, match="exports raw, preference, sft"):
        projects.export(project, "guard")
    quality = projects.agreement(project, resamples=50)
    assert quality["annotators"]["bad"]["gold"] == {"correct": 0, "n": 2, "accuracy": 0.0}
    assert quality["alpha"]["level"] == "nominal" and quality["alpha"]["value"] < 1.0
    assert quality["alpha"]["ci_low"] <= quality["alpha"]["value"] <= quality["alpha"]["ci_high"]
    alone = projects.agreement(project, resamples=0)["alpha"]
    assert alone["value"] == quality["alpha"]["value"] and alone["ci_low"] is None


def test_rankings_aggregate_by_reliability_weighted_bradley_terry(store):
    people = _people(store, "a", "b", "c")
    projects = Projects(store)
    project = projects.create("k", ProjectSpec(kind="ranking", overlap=3))
    projects.add_items(project, [("r", {"prompt": "q", "responses": ["mid", "best", "worst"]})])
    orders = {"a": [1, 0, 2], "b": [1, 0, 2], "c": [2, 0, 1]}
    for user in people:
        item = projects.next_item(project, user.id)
        projects.label(project, user.id, item.id, {"order": orders[user.name]})
    pairs = [(r["chosen"], r["rejected"]) for r in projects.export(project, "preference", method="bradley-terry")]
    assert pairs == [("best", "mid"), ("best", "worst"), ("mid", "worst")]
    assert len(projects.export(project, "preference", method="raw")) == 3 * 3


def test_flags_export_guard_rows_and_ratings_sft_rows(store):
    a, b = _people(store, "a", "b")
    projects = Projects(store)
    flags = projects.create("f", ProjectSpec(kind="flags", overlap=2, flags=["harmful", "rude"]))
    projects.add_items(flags, [("1", {"prompt": "q1", "response": "bad"}), ("2", {"prompt": "q2", "response": "ok"})])
    for user in (a, b):
        while (item := projects.next_item(flags, user.id)) is not None:
            projects.label(flags, user.id, item.id, {"flags": ["harmful"] if item.prompt == "q1" else []})
    assert [(r["text"], r["label"], r["flags"]) for r in projects.export(flags, "guard", method="majority")] == [
        ("bad", "unsafe", ["harmful"]), ("ok", "safe", [])]
    rating = projects.create("r", ProjectSpec(kind="rating", overlap=2, scale=5))
    projects.add_items(rating, [("1", {"prompt": "q1", "response": "great"}),
                                ("2", {"prompt": "q2", "response": "meh"})])
    for user in (a, b):
        while (item := projects.next_item(rating, user.id)) is not None:
            projects.label(rating, user.id, item.id, {"rating": 5 if item.prompt == "q1" else 2})
    assert [r["completion"] for r in projects.export(rating, "sft")] == ["great"]


def _overlap_race(engine):
    projects = Projects(engine)
    people = _people(engine, *[f"u{i}" for i in range(8)])
    project = projects.create("race", ProjectSpec(kind="pairwise", overlap=3))
    projects.add_items(project, [(f"r{i}", {"prompt": f"q{i}", "responses": ["x", "y"]}) for i in range(10)])
    barrier = threading.Barrier(len(people))

    def work(user):
        barrier.wait()
        while (item := projects.next_item(project, user.id)) is not None:
            projects.label(project, user.id, item.id, {"choice": 0})

    with ThreadPoolExecutor(len(people)) as pool:
        list(pool.map(work, people))
    counts = {}
    for row in projects.labels(project):
        counts[row["item"]] = counts.get(row["item"], 0) + 1
    return counts


def test_overlap_holds_with_annotators_at_once_sqlite(store):
    assert sorted(_overlap_race(store).values()) == [3] * 10


def test_overlap_holds_with_annotators_at_once_postgres():
    with postgres_database("tether_studio") as url:
        engine = connect(url)
        assert sorted(_overlap_race(engine).values()) == [3] * 10
        engine.dispose()
