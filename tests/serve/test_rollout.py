"""Eval-gated staged rollouts through a running gateway and the official openai client: a canary that
over-refuses is rolled back by its online gate, a good one is promoted across a gateway restart, an offline gate
stops a canary before it serves anything, a crossed capability threshold demands its safeguards; every step is
in the audit chain."""

import json
import time

import pytest
import yaml
from tests.serve.test_gateway import _Server

from tether.cli.main import main
from tether.models.generation import Completion
from tether.serve.app import Gateway, create_app
from tether.serve.audit import verify
from tether.serve.batching import BatchingGenerator
from tether.serve.rollout import (
    CapabilityRule,
    Counts,
    OnlineGate,
    RolloutConfig,
    Rollouts,
    Router,
    capability_safeguards,
    judge_online,
)

NAME = "assistant"


class _Says:
    def __init__(self, text):
        self.text = text

    def generate(self, prompts, settings):
        return [Completion(self.text, [1] * 6, finish_reason="eos") for _ in prompts]


def _backend(text):
    return BatchingGenerator(_Says(text))


def _cli(*args):
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return done.value.code or 0


class _Gateway:
    """A gateway serving "Sure, version one." as NAME, with canaries loadable by name."""

    def __init__(self, db_file):
        self.gateway = Gateway.open(f"sqlite:///{db_file}")
        self.stable = _backend("Sure, version one.")
        canaries = {"refuser": "I'm sorry, but I can't help with that.", "v2": "Sure, version two."}
        self.router = Router(Rollouts(self.gateway.engine, refresh_s=0.05), NAME, self.stable,
                             lambda source: _backend(canaries[source]), seed=0)
        self.server = _Server(create_app(self.stable, self.gateway, NAME, rollouts=self.router, rollout_check_s=0.05))

    def ask(self, key, n, *, stream=False):
        client = self.server.client(key)
        replies = []
        for i in range(n):
            reply = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": f"question {i}"}],
                                                   max_tokens=8, stream=stream)
            replies.append("".join(c.choices[0].delta.content or "" for c in reply) if stream
                           else reply.choices[0].message.content)
        return replies

    def stop(self):
        self.server.stop()
        self.stable.close()


def _start(tmp_path, db, **config):
    path = tmp_path / f"rollout-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump({"model": NAME, **config}))
    return _cli("rollout", "start", str(path), "--db", db)


def _wait_for(rollouts, predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        (found,) = rollouts.history(NAME)[-1:]
        if predicate(found):
            return found
        time.sleep(0.05)
    raise AssertionError(f"the rollout stayed {found.state} at step {found.step}")


def _decisions(gateway):
    return [json.loads(r) for _, r, _, _ in gateway.audit.rows()]


def test_an_over_refusing_canary_is_rolled_back_by_its_online_gate(tmp_path):
    served = _Gateway(tmp_path / "g.db")
    db = str(served.gateway.engine.url)
    try:
        _, key = served.gateway.keys.create("client")
        served.ask(key, 1)  # a canary's backend is loaded by the controller before traffic reaches it
        assert _start(tmp_path, db, canary="refuser", steps=[{"share": 0.5, "min_requests": 8}],
                      online={"max_refusal_increase": 0.2}) == 0
        rollouts = served.router.rollouts
        replies = []
        while rollouts.history(NAME)[-1].state == "running" and len(replies) < 200:
            replies += served.ask(key, 2, stream=len(replies) % 4 == 0)
        rolled = _wait_for(rollouts, lambda r: r.state == "rolled_back")
        assert "refusal rate increase" in rolled.reason and "online gate failed at step 1" in rolled.reason
        assert any("sorry" in r for r in replies)  # the canary did serve its share first
        time.sleep(0.2)  # every process's routing reads the store at most refresh_s (here 0.05 s) apart
        after = served.ask(key, 20)
        assert after == ["Sure, version one."] * 20  # rolled back: everything to the current version
        rows = _decisions(served.gateway)
        steps = [r["decision"] for r in rows if r["decision"].startswith("rollout_")]
        assert steps == ["rollout_started", "rollout_gate", "rollout_step", "rollout_gate", "rollout_rolled_back"]
        online = next(r for r in rows if r["decision"] == "rollout_gate" and r["stage"] == "online")
        assert not online["passed"] and online["checks"][-1]["name"] == "refusal rate increase"
        reply = served.server.client(key).chat.completions.with_raw_response.create(
            model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert "x-tether-version" not in reply.headers  # no rollout running: nothing routed
        routed = [r for r in rows if r.get("version") == "canary" and r.get("decision") == "answered"]
        assert routed and all(r["refused"] for r in routed)
        assert verify(served.gateway.audit).ok
    finally:
        served.stop()


def test_a_good_canary_is_promoted_step_by_step_across_a_gateway_restart(tmp_path, capsys):
    db_file = tmp_path / "g.db"
    served = _Gateway(db_file)
    db = str(served.gateway.engine.url)
    _, key = served.gateway.keys.create("client")
    served.ask(key, 1)
    assert _start(tmp_path, db, canary="v2", steps=[{"share": 0.5, "min_requests": 6},
                                                    {"share": 1.0, "min_requests": 6}]) == 0
    rollouts = served.router.rollouts
    try:
        while rollouts.history(NAME)[-1].step == 0 and rollouts.history(NAME)[-1].state == "running":
            served.ask(key, 2)
        assert rollouts.history(NAME)[-1].step == 1
    finally:
        served.stop()  # the gateway goes down mid-rollout

    again = _Gateway(db_file)  # and comes back on the same store: the rollout carries on at step 2
    try:
        assert again.router.rollouts.history(NAME)[-1].state == "running"
        replies = []
        while again.router.rollouts.history(NAME)[-1].state == "running" and len(replies) < 200:
            replies += again.ask(key, 2)
        promoted = _wait_for(again.router.rollouts, lambda r: r.state == "promoted")
        assert promoted.step == 1 and set(replies) == {"Sure, version two."}  # share 1.0 at step 2, from the start
        assert again.ask(key, 5) == ["Sure, version two."] * 5  # promoted: the canary is the current version
        rows = _decisions(again.gateway)
        steps = [(r["decision"], r.get("step"), r.get("passed")) for r in rows if r["decision"].startswith("rollout_")]
        assert steps == [("rollout_started", None, None), ("rollout_gate", None, True), ("rollout_step", 0, None),
                         ("rollout_gate", 0, True), ("rollout_step", 1, None), ("rollout_gate", 1, True),
                         ("rollout_promoted", None, None)]
        capsys.readouterr()
        assert _cli("audit", "report", "--json", "--db", db) == 0
        changes = [c["decision"] for c in json.loads(capsys.readouterr().out)["changes"]]
        assert changes == ["key_created", *(d for d, _, _ in steps)]
        assert _cli("rollout", "status", promoted.id, "--db", db) == 0
        assert "promoted" in capsys.readouterr().out
    finally:
        again.stop()


def _eval_run(path, over_refused, n=60):
    path.mkdir()
    rows = [{"prompt_index": i, "sample_index": 0, "id": f"p{i}",
             "outcomes": {"harmless.over_refusal": float(i < over_refused), "helpful.task_accuracy": 1.0}}
            for i in range(n)]
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "metrics.json").write_text(json.dumps({
        "model": path.name, "suite": "file", "n_samples": n,
        "metrics": {"harmless.over_refusal": {"value": over_refused / n}, "helpful.task_accuracy": {"value": 1.0},
                    "capability.hazard_knowledge": {"value": 0.9}}}))
    return str(path)


def test_an_offline_gate_stops_an_over_refusing_canary_before_any_traffic(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    current, refuser = _eval_run(tmp_path / "current", 2), _eval_run(tmp_path / "refuser", 30)
    offline = {"baseline": current, "candidate": refuser, "max_increase": {"harmless.over_refusal": 0.05}}
    assert _start(tmp_path, db, canary="refuser", offline=offline) == 1
    out = capsys.readouterr().out
    assert "FAIL  harmless.over_refusal increase" in out and "rolled_back" in out
    (rollout,) = Rollouts(Gateway.open(db).engine).history(NAME)
    assert rollout.state == "rolled_back" and rollout.reason.startswith("offline gate failed")
    # The same canary against itself passes; a metric the gate names but the runs lack fails.
    assert _start(tmp_path, db, canary="same", offline={**offline, "baseline": refuser}) == 0
    capsys.readouterr()
    assert _cli("rollout", "abort", Rollouts(Gateway.open(db).engine).history(NAME)[-1].id, "--db", db) == 0
    missing = {**offline, "baseline": refuser, "max_increase": {"harmless.harmful_compliance": 0.0}}
    assert _start(tmp_path, db, canary="same", offline=missing) == 1
    assert "not in both eval runs" in capsys.readouterr().out


def test_a_crossed_capability_threshold_needs_its_safeguards_on_the_gateway(tmp_path):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    runs = _eval_run(tmp_path / "a", 2), _eval_run(tmp_path / "b", 2)
    rule = {"metric": "capability.hazard_knowledge", "above": 0.5, "safeguards": ["harm-classifier"]}
    offline = {"baseline": runs[0], "candidate": runs[1], "max_increase": {"harmless.over_refusal": 0.05}}
    assert _start(tmp_path, db, canary="v2", offline=offline,
                  capabilities=[rule], steps=[{"share": 0.1, "min_requests": 1}]) == 0
    rollouts = Rollouts(Gateway.open(db).engine)
    assert rollouts.history(NAME)[-1].safeguards == ["harm-classifier"]
    assert rollouts.tick(NAME, {"harm-classifier"}) == []  # on: nothing due yet (no canary request)
    (decided,) = rollouts.tick(NAME, {"pii"})  # a gateway without it rolls the canary back
    assert "rolled back" in decided and "harm-classifier" in rollouts.history(NAME)[-1].reason


def test_a_canary_that_cannot_be_loaded_is_rolled_back(tmp_path):
    served = _Gateway(tmp_path / "g.db")
    try:
        _, key = served.gateway.keys.create("client")
        assert _start(tmp_path, str(served.gateway.engine.url), canary="missing") == 0
        rolled = _wait_for(served.router.rollouts, lambda r: r.state == "rolled_back")
        assert "could not be loaded: KeyError" in rolled.reason
        assert served.ask(key, 3) == ["Sure, version one."] * 3
    finally:
        served.stop()


def test_gate_arithmetic_by_hand():
    gate = OnlineGate(max_error_rate=0.1, max_flag_rate=0.2, max_refusal_increase=0.1, max_alarms=0)
    ok = judge_online(gate, Counts(20, 2, 4, 5), Counts(20, 0, 0, 3), alarms=0)
    assert ok.passed and [c.value for c in ok.checks] == [0.1, 0.2, 0.1, 0]
    bad = judge_online(gate, Counts(20, 3, 4, 6), Counts(20, 0, 0, 3), alarms=1)
    assert [c.passed for c in bad.checks] == [False, True, False, False]
    assert "error rate = 0.15" in bad.why()
    checks, needed = capability_safeguards(
        [CapabilityRule(metric="x", above=0.5, safeguards=["a"]), CapabilityRule(metric="y", above=0.5,
                                                                                 safeguards=["b"]),
         CapabilityRule(metric="z", above=0.5, safeguards=["c", "a"])], {"x": {"value": 0.7}, "y": 0.2})
    assert needed == ["a", "c"]  # x crossed, y not, z missing: required rather than assumed unneeded
    with pytest.raises(ValueError, match="must not decrease"):
        RolloutConfig(model="m", canary="c", steps=[{"share": 0.5}, {"share": 0.1}])


def test_gateways_ticking_at_once_on_postgresql_judge_each_step_once():
    from concurrent.futures import ThreadPoolExecutor

    from tests.serve.conftest import postgres_database

    from tether.serve.rollout import GateChecks
    from tether.serve.store import connect, write_transaction

    with postgres_database("rollout") as url:
        engines = [connect(url) for _ in range(4)]  # four gateways' connections to one store
        try:
            cfg = RolloutConfig(model=NAME, canary="v2", steps=[{"share": 0.5, "min_requests": 3},
                                                                 {"share": 1.0, "min_requests": 3}])
            first = Rollouts(engines[0])
            rollout = first.start(cfg, GateChecks([]), [])
            with pytest.raises(Exception, match="is running"):
                first.start(cfg, GateChecks([]), [])
            for step in (0, 1):
                with write_transaction(engines[0]) as conn:
                    for _ in range(3):
                        first.count_in(conn, rollout.id, step, "canary", error=False, flagged=False, refused=False)
                        first.count_in(conn, rollout.id, step, "stable", error=False, flagged=False, refused=False)
                with ThreadPoolExecutor(4) as pool:
                    decided = [d for ds in pool.map(lambda e: Rollouts(e).tick(NAME, set()), engines) for d in ds]
                assert len(decided) == 1  # one gateway judged the step; the others found it moved on
            assert first.get(rollout.id).state == "promoted"
            rows = [json.loads(r) for _, r, _, _ in first.audit.rows()]
            gates = [(r["stage"], r.get("step")) for r in rows if r["decision"] == "rollout_gate"]
            assert gates == [("offline", None), ("online", 0), ("online", 1)]
            assert verify(first.audit).ok
        finally:
            for engine in engines:
                engine.dispose()
