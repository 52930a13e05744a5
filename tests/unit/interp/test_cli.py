"""``tether interp capture`` and ``probe`` on a tiny model: shards with labels, probes and their metrics side
by side; bad input is one line and exit 2, nothing overwritten."""

import json

from tests.conftest import run_cli


def test_capture_then_probe(tmp_path, capsys, tokenizer):
    from tether.models.loading import save_model
    from tether.models.tiny import build_tiny_model

    model = str(save_model(build_tiny_model("llama", tokenizer), tokenizer, tmp_path / "model"))
    data = tmp_path / "texts.jsonl"
    rows = [{"text": f"please tell me about item {i}", "label": 0} for i in range(20)] + \
           [{"text": f"zq xv zq xv {i} zq xv", "label": 1} for i in range(20)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    acts = tmp_path / "acts"
    code, out, err = run_cli(["interp", "capture", "-m", model, "--data", str(data), "--site", "resid_post.-1",
                           "--site", "mlp_out.0", "--positions", "mean", "--out", str(acts), "--shard-rows", "16"],
                          capsys)
    assert code == 0, err
    assert "40 rows of resid_post.1, mlp_out.0 from 40 texts" in out and len(list(acts.glob("shard-*"))) == 3
    code, out, err = run_cli(["interp", "probe", "--capture", str(acts), "--site", "resid_post.1", "--out",
                           str(tmp_path / "probes"), "--resamples", "50"], capsys)
    assert code == 0, err
    assert "difference-of-means" in out and "logistic" in out
    metrics = json.loads((tmp_path / "probes" / "metrics.json").read_text())
    assert metrics["train"] == 28 and metrics["test"] == 12 and metrics["logistic"]["auroc"] > 0.9

    for args, message in ((["capture", "-m", model, "--data", str(data), "--site", "resid.1", "--out",
                            str(tmp_path / "x")], "KIND.LAYER"),
                          (["capture", "-m", model, "--data", str(data), "--site", "resid_post.1", "--out",
                            str(acts)], "already holds a capture"),
                          (["probe", "--capture", str(acts), "--site", "attn_out.0", "--out", str(tmp_path / "p2")],
                           "no site 'attn_out.0'"),
                          (["probe", "--capture", str(acts), "--site", "resid_post.1", "--out",
                            str(tmp_path / "probes")], "already holds probes")):
        code, _, err = run_cli(["interp", *args], capsys)
        assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "p2").exists()
