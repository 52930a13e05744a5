"""`tether edit rome|memit|alphaedit` on tiny models: independent edits leave no trace on each other or on
the model, sequential edits accumulate with capability checked after every batch and the edited model saved
(only the edited matrices differ), and bad requests or layouts are refused with a reason."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import run_cli

REQUESTS = [
    {"id": "a", "subject": "Kavel", "prompt": "The capital of {} is", "target": " Morzin", "target_true": " Torvel",
     "paraphrases": ["Kavel has a capital called"], "neighbours": ["The capital of Zinra is"]},
    {"id": "b", "subject": "Zinra", "prompt": "The animal of {} is", "target": " Pelix",
     "neighbours": ["The animal of Kavel is", "The capital of Zinra is"]},
    {"id": "c", "subject": "Dulmor", "prompt": "The colour of {} is", "target": " red"},
    {"id": "d", "subject": "Ostel", "prompt": "{} flows", "target": " north"},
]
# Rewrites a's neighbour: in a sequential run that neighbour is meant to change and is left out of locality.
REWRITES_A_NEIGHBOUR = {"id": "e", "subject": "Zinra", "prompt": "The capital of {} is", "target": " Kavel"}


def _files(tmp_path, requests):
    req = tmp_path / "requests.jsonl"
    req.write_text("".join(json.dumps(r) + "\n" for r in requests))
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"The capital of land {i} is a city with {i} gates."}) + "\n"
                             for i in range(24)))
    return req, texts


def _edit(method, tmp_path, capsys, name, requests, *extra):
    req, texts = _files(tmp_path, requests)
    out = tmp_path / name
    code, shown, err = run_cli(["edit", method, "--set", "model.path=tiny:llama", "--set", f"requests={req}",
                                "--set", f"statistics.data={texts}", "--set", "statistics.texts=16",
                                "--set", "statistics.capability_texts=4", "--set", "contexts=2",
                                "--set", "search.steps=4", *extra, "--out", str(out)], capsys)
    assert code == 0, err
    return out, json.loads((out / "edit.json").read_text())


def _rows(out):
    return {r["id"]: r for r in map(json.loads, (out / "edits.jsonl").read_text().splitlines())}


@pytest.mark.parametrize(("method", "layers", "token"), [("rome", "[0]", "subject"), ("alphaedit", "[0,1]", "last")])
def test_independent_edits_do_not_leak_into_each_other(tmp_path, capsys, method, layers, token):
    options = ["--set", "mode=independent", "--set", f"layers={layers}", "--set", f"token={token}"]
    together, summary = _edit(method, tmp_path, capsys, "ab", REQUESTS[:2], *options)
    alone, _ = _edit(method, tmp_path, capsys, "b", REQUESTS[1:2], *options)
    assert summary["weights_restored"] is True and not (together / "model").exists()
    # b after a is b alone: the same search, the same continuations, bit for bit.
    assert _rows(together)["b"]["search_loss"] == _rows(alone)["b"]["search_loss"]
    assert _rows(together)["b"]["after"] == _rows(alone)["b"]["after"]
    assert summary["requests"] == 2 and summary["after"]["efficacy"]["n"] == 2


def test_sequential_edits_accumulate_with_capability_checked_each_batch(tmp_path, capsys, tokenizer):
    out, summary = _edit("memit", tmp_path, capsys, "seq", [*REQUESTS, REWRITES_A_NEIGHBOUR], "--set", "batch=2",
                         "--set", "layers=[0,1]", "--set", "token=last")
    checks = summary["capability"]["checks"]
    assert [c["edits"] for c in checks] == [2, 4, 5]
    # a and b share a neighbour that e rewrites: counted until e's edit is made.
    assert [c["neighbours_counted"] for c in checks] == [3, 3, 1]
    assert all(c["token_nll"] > 0 and 0 <= c["efficacy_so_far"] <= 1 for c in checks)
    assert checks[-1]["neighbourhood_kept"] is not None
    assert summary["capability"]["token_nll_before"] > 0
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4, 5]
    # Only the two edited MLP projections changed.
    from tether.models.tiny import build_tiny_model

    original = build_tiny_model("llama", tokenizer).state_dict()
    saved = load_file(str(out / "model" / "model.safetensors"))
    changed = {k for k, v in saved.items() if k in original and not torch.equal(v, original[k])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    rows = _rows(out)
    assert set(rows) == {"a", "b", "c", "d", "e"} and "probability" in rows["a"]["after"]
    assert rows["a"]["after"]["neighbours"][0]["edited"] is True
    assert [n["edited"] for n in rows["b"]["after"]["neighbours"]] == [False, True]
    assert summary["after"]["neighbourhood"]["n"] == 1  # only b has a neighbour still counted


def test_bad_requests_and_layouts_are_refused_with_a_reason(tmp_path, capsys):
    req, texts = _files(tmp_path, [*REQUESTS[:1], {"subject": "X", "prompt": "no slot", "target": " y"}])
    common = ["--set", f"requests={req}", "--set", f"statistics.data={texts}", "--out", str(tmp_path / "x")]
    code, _, err = run_cli(["edit", "rome", "--set", "model.path=tiny:llama", *common], capsys)
    assert code == 2 and f"{req}:2" in err and "exactly one {}" in err
    req.write_text(json.dumps(REQUESTS[0]) + "\n")
    code, _, err = run_cli(["edit", "rome", "--set", "model.path=tiny:mixtral", *common[:-1], str(tmp_path / "y")],
                           capsys)
    assert code == 2 and "mixture of experts" in err
    code, _, err = run_cli(["edit", "rome", "--set", "model.path=tiny:llama", "--set", "layers=[0,1]",
                            *common[:-1], str(tmp_path / "z")], capsys)
    assert code == 2 and "exactly one layer" in err
    code, _, err = run_cli(["edit", "memit", "--set", "model.path=tiny:llama", "--set", "layers=[0,1]",
                            *common[:-1], str(tmp_path / "w")], capsys)
    assert code == 2 and "token=last" in err
