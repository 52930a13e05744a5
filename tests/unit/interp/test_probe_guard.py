"""A probe as a guard: fitted on one model's activations, it flags the requests it should, carries its
score in every verdict (what the audit trail and the monitor read), and bad files are one clear error."""

import json

import pytest

from tether.core.errors import UserError
from tether.guard.base import load_guards


def test_a_probe_guard_flags_what_its_probe_scores_high(tmp_path, tokenizer):
    import numpy as np

    from tether.interp.capture import capture
    from tether.interp.probes import difference_of_means
    from tether.models.loading import save_model
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model("llama", tokenizer, seed=0).eval()
    path = save_model(model, tokenizer, tmp_path / "model")
    flagged = [[{"role": "user", "content": f"zq xv zq xv {i}"}] for i in range(12)]
    plain = [[{"role": "user", "content": f"please tell me about item {i}"}] for i in range(12)]
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in flagged + plain]
    acts = capture(model, tokenizer, texts, ["resid_post.1"])["resid_post.1"].numpy()
    probe = difference_of_means("resid_post.1", acts, np.array([1] * 12 + [0] * 12))
    probe.save(tmp_path / "probe.json")
    guards = tmp_path / "guards.yaml"
    guards.write_text(json.dumps([{"kind": "probe", "name": "odd", "model": str(path),
                                   "probe": str(tmp_path / "probe.json"), "threshold": 0.0, "mode": "shadow"}]))
    [guard] = load_guards(str(guards))
    assert guard.name == "odd" and guard.shadow
    verdicts = [guard.check_input(c) for c in flagged[:3] + plain[:3]]
    assert [v.allowed for v in verdicts] == [False] * 3 + [True] * 3
    assert all(v.score is not None for v in verdicts) and verdicts[0].categories == ("probe",)
    assert verdicts[0].as_dict()["score"] == round(verdicts[0].score, 4)
    assert guard.check_output("anything").allowed

    (tmp_path / "bad.json").write_text("{}")
    guards.write_text(json.dumps([{"kind": "probe", "model": str(path), "probe": str(tmp_path / "bad.json"),
                                   "threshold": 0.0}]))
    with pytest.raises(UserError, match="not a probe file"):
        load_guards(str(guards))
