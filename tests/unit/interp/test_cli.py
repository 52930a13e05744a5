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

    # Out of distribution: the same contrast in other words; a control set of ordinary rows for the threshold.
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in
                             [{"text": f"what do you know of thing {i}", "label": 0} for i in range(10)] +
                             [{"text": f"xv zq {i} xv zq xv zq", "label": 1} for i in range(10)]))
    ordinary = tmp_path / "ordinary.jsonl"
    ordinary.write_text("".join(json.dumps({"text": f"a plain request number {i}"}) + "\n" for i in range(30)))
    for source, into in ((other, "acts-other"), (ordinary, "acts-control")):
        code, _, err = run_cli(["interp", "capture", "-m", model, "--data", str(source), "--site", "resid_post.1",
                                "--positions", "mean", "--out", str(tmp_path / into)], capsys)
        assert code == 0, err
    code, out, err = run_cli(["interp", "probe", "--capture", str(acts), "--site", "resid_post.1", "--out",
                              str(tmp_path / "probes-ood"), "--resamples", "50", "--transfer",
                              str(tmp_path / "acts-other"), "--control", str(tmp_path / "acts-control")], capsys)
    assert code == 0, err
    ood = json.loads((tmp_path / "probes-ood" / "metrics.json").read_text())
    moved = ood["transfer"][str(tmp_path / "acts-other")]
    assert set(moved) == {"difference-of-means", "logistic"}
    assert moved["logistic"]["positives"] == 10 and moved["logistic"]["negatives"] == 10
    assert ood["logistic"]["control"] == 30 and moved["logistic"]["control"] == 30  # threshold from the control set
    assert f"{tmp_path / 'acts-other'}: logistic" in out
    # The held-out figures do not depend on the transfer set; only the threshold moved to the control set.
    assert ood["logistic"]["auroc"] == metrics["logistic"]["auroc"]

    for args, message in ((["capture", "-m", model, "--data", str(data), "--site", "resid.1", "--out",
                            str(tmp_path / "x")], "KIND.LAYER"),
                          (["capture", "-m", model, "--data", str(data), "--site", "resid_post.1", "--out",
                            str(acts)], "already holds a capture"),
                          (["probe", "--capture", str(acts), "--site", "attn_out.0", "--out", str(tmp_path / "p2")],
                           "no site 'attn_out.0'"),
                          (["probe", "--capture", str(acts), "--site", "resid_post.1", "--out",
                            str(tmp_path / "probes")], "already holds probes"),
                          (["probe", "--capture", str(acts), "--site", "resid_post.1", "--out", str(tmp_path / "p3"),
                            "--transfer", str(tmp_path / "acts-control")], "every row needs a label"),
                          (["probe", "--capture", str(acts), "--site", "resid_post.1", "--out", str(tmp_path / "p3"),
                            "--control", str(tmp_path / "nowhere")], "no capture.json")):
        code, _, err = run_cli(["interp", *args], capsys)
        assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "p2").exists() and not (tmp_path / "p3").exists()


def test_direction_orthogonalise_and_sae(tmp_path, capsys, tokenizer):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tether.models.loading import save_model
    from tether.models.tiny import build_tiny_model

    model = str(save_model(build_tiny_model("llama", tokenizer), tokenizer, tmp_path / "model"))
    data = tmp_path / "texts.jsonl"
    rows = [{"text": f"please tell me about item {i}", "label": i % 2} for i in range(24)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    acts = tmp_path / "acts"
    code, _, err = run_cli(["interp", "capture", "-m", model, "--data", str(data), "--site", "resid_pre.1",
                            "--positions", "all", "--out", str(acts)], capsys)
    assert code == 0, err
    code, out, err = run_cli(["interp", "direction", "--capture", str(acts), "--site", "resid_pre.1", "--out",
                              str(tmp_path / "d.safetensors")], capsys)
    assert code == 0 and "direction at resid_pre.1" in out, err
    assert load_file(str(tmp_path / "d.safetensors"))["direction"].shape == (64,)
    code, out, err = run_cli(["interp", "orthogonalise", "-m", model, "--direction", str(tmp_path / "d.safetensors"),
                              "--out", str(tmp_path / "ortho")], capsys)
    assert code == 0, err
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "ortho") is not None
    code, out, err = run_cli(["interp", "sae", "--capture", str(acts), "--site", "resid_pre.1", "--width", "32",
                              "--k", "4", "--epochs", "2", "--out", str(tmp_path / "sae")], capsys)
    assert code == 0 and "L0" in out, err
    metrics = json.loads((tmp_path / "sae" / "metrics.json").read_text())
    assert metrics["l0"] <= 4 and (tmp_path / "sae" / "sae_weights.safetensors").exists()

    for args, message in ((["direction", "--capture", str(acts), "--site", "resid_pre.1", "--out",
                            str(tmp_path / "d.safetensors")], "already exists"),
                          (["orthogonalise", "-m", model, "--direction", str(data), "--out", str(tmp_path / "o2")],
                           "not a direction file"),
                          (["sae", "--capture", str(acts), "--site", "resid_pre.1", "--kind", "relu", "--out",
                            str(tmp_path / "s2")], "expected topk"),
                          (["sae", "--capture", str(acts), "--site", "resid_pre.1", "--out", str(tmp_path / "sae")],
                           "already holds an SAE")):
        code, _, err = run_cli(["interp", *args], capsys)
        assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "s2").exists()
