"""Activations captured in batches are those of each text read alone, at the last token, the mean or every
token; streamed to shards on disk they load back with their labels."""

import pytest
import torch

from tether.interp.capture import capture, capture_tail, capture_to_disk, load_capture
from tether.interp.sites import hooked
from tether.models.tiny import build_tiny_model

TEXTS = ["a short one", "a rather longer text than the first of them", "x", "the fourth", "and a fifth text here"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from tether.models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    return build_tiny_model("llama", tokenizer, seed=1).eval(), tokenizer


def _alone(model, tokenizer, text, site):
    seen = {}
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad(), hooked(model, {site: lambda v: seen.setdefault("v", v.detach().clone())}):
        model(input_ids=ids)
    return seen["v"][0]


def test_a_batch_reads_each_text_as_if_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    tokenizer.padding_side = "left"  # a generator's setting: capture pads on the right and puts it back
    sites = ["resid_post.0", "mlp_out.1"]
    last = capture(model, tokenizer, TEXTS, sites, batch_size=2)
    mean = capture(model, tokenizer, TEXTS, sites, positions="mean", batch_size=3)
    every = capture(model, tokenizer, TEXTS, ["resid_post.0"], positions="all", batch_size=5)
    assert last["resid_post.0"].shape == (5, 64) and every["resid_post.0"].shape[0] > 5
    start = 0
    for i, text in enumerate(TEXTS):
        for site in sites:
            alone = _alone(model, tokenizer, text, site)
            assert torch.allclose(last[site][i], alone[-1], atol=1e-5)
            assert torch.allclose(mean[site][i], alone.mean(0), atol=1e-5)
        alone = _alone(model, tokenizer, text, "resid_post.0")
        tokens = len(alone)
        assert torch.allclose(every["resid_post.0"][start:start + tokens], alone, atol=1e-5)
        start += tokens
    assert tokenizer.padding_side == "left"


def test_the_tail_is_each_texts_last_tokens_last_first(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = [t for t in TEXTS if len(tokenizer(t)["input_ids"]) >= 3]
    tail = capture_tail(model, tokenizer, texts, ["resid_post.0"], 3, batch_size=2)["resid_post.0"]
    assert len(texts) == 4 and tail.shape == (4, 3, 64)
    for i, text in enumerate(texts):
        alone = _alone(model, tokenizer, text, "resid_post.0")
        for k in range(3):
            assert torch.allclose(tail[i, k], alone[-1 - k], atol=1e-5)
    tokenizer.padding_side = "left"
    with pytest.raises(ValueError, match="text 2 has fewer than 3 tokens"):
        capture_tail(model, tokenizer, TEXTS, ["resid_post.0"], 3)
    assert tokenizer.padding_side == "left"  # put back at once, though the capture stopped half-way


def test_shards_stream_to_disk_and_load_back_with_labels(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    side = tokenizer.padding_side
    records = [{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    out = capture_to_disk(model, tokenizer, records, ["resid_pre.1", "attn_out.0"], tmp_path / "acts", batch_size=2,
                          shard_rows=2)
    assert tokenizer.padding_side == side
    assert sorted(p.name for p in out.glob("shard-*.safetensors")) == [f"shard-0000{i}.safetensors" for i in range(3)]
    acts, rows = load_capture(out)
    assert [r["label"] for r in rows] == [0, 1, 0, 1, 0] and [r["record"] for r in rows] == [0, 1, 2, 3, 4]
    expected = capture(model, tokenizer, TEXTS, ["resid_pre.1", "attn_out.0"])
    assert all(torch.allclose(acts[s], expected[s]) for s in expected)
    with pytest.raises(FileExistsError):
        capture_to_disk(model, tokenizer, records, ["resid_pre.1"], out)
    with pytest.raises(ValueError, match="last, mean or all"):
        capture(model, tokenizer, TEXTS, ["resid_pre.1"], positions="first")
