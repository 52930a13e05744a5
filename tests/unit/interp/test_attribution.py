"""Attribution and patching on a tiny model: integrated gradients add up to the score's change (their
defining property), and with prompts that differ in one token, patching restores everything at that
token's embedding and nothing elsewhere, and attribution patching finds the same token."""

import pytest

from tether.interp.attribution import (
    Scorer,
    attribution_patching,
    head_patching,
    patching_sweep,
    token_attributions,
)
from tether.models.tiny import build_tiny_model


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model("llama", tokenizer, seed=0).eval()


def test_integrated_gradients_add_up_and_grad_x_input_covers_every_token(model, tokenizer):
    scorer = Scorer(target=" done", foil=" no")
    ig = token_attributions(model, tokenizer, "the quick brown fox", scorer, steps=24)
    change = ig["score"] - ig["baseline_score"]
    assert len(ig["attributions"]) == len(ig["tokens"]) == len(tokenizer("the quick brown fox")["input_ids"])
    assert ig["completeness_gap"] <= 0.02 * abs(change) + 1e-3, ig
    gxi = token_attributions(model, tokenizer, "the quick brown fox", scorer, method="grad_x_input")
    assert len(gxi["attributions"]) == len(ig["attributions"]) and gxi["score"] == pytest.approx(ig["score"], abs=1e-4)
    with pytest.raises(ValueError, match="expected grad_x_input"):
        token_attributions(model, tokenizer, "x", scorer, method="saliency")


def test_patching_finds_the_one_token_that_differs(model, tokenizer):
    clean, corrupted = "abcdef", "abcXef"
    ids = (tokenizer(clean, add_special_tokens=False)["input_ids"],
           tokenizer(corrupted, add_special_tokens=False)["input_ids"])
    assert len(ids[0]) == len(ids[1])
    differs = [i for i, (a, b) in enumerate(zip(*ids, strict=True)) if a != b]
    assert len(differs) == 1
    scorer = Scorer(target="g")
    sweep = patching_sweep(model, tokenizer, clean, corrupted, scorer)
    first = sweep["restored"][0]  # resid_pre.0: the embeddings themselves
    assert first[differs[0]] == pytest.approx(1.0, abs=1e-4)
    assert all(abs(v) < 1e-6 for i, v in enumerate(first) if i != differs[0])
    assert len(sweep["restored"]) == 2 and len(first) == len(ids[0])
    estimate = attribution_patching(model, tokenizer, clean, corrupted, scorer)
    row = estimate["restored"][0]
    assert all(v == 0 for i, v in enumerate(row) if i != differs[0]) and row[differs[0]] != 0
    assert estimate["clean_score"] == pytest.approx(sweep["clean_score"], abs=1e-4)
    with pytest.raises(ValueError, match="same number of tokens"):
        patching_sweep(model, tokenizer, "abc", "abcdef", scorer)


def test_head_patching_splits_what_the_attention_output_restores(model, tokenizer):
    import torch

    from tether.interp.sites import hooked

    clean, corrupted = "abcdef", "abcXef"
    scorer = Scorer(target="g")
    heads = head_patching(model, tokenizer, clean, corrupted, scorer)
    assert heads["heads"] == model.config.num_attention_heads and len(heads["restored"]) == 2
    assert all(len(row) == heads["heads"] for row in heads["restored"])
    assert any(abs(v) > 1e-4 for row in heads["restored"] for v in row)  # some head carries the difference
    # Every head of a layer patched at once is the whole attention output patched at every position.
    sweep = patching_sweep(model, tokenizer, clean, corrupted, scorer, kind="attn_out")
    clean_ids = tokenizer(clean, add_special_tokens=False, return_tensors="pt")["input_ids"]
    corrupt_ids = tokenizer(corrupted, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def patched_everywhere(site):
        stored = {}
        with torch.no_grad(), hooked(model, {site: lambda v: stored.setdefault("v", v.clone())}):
            scorer(model, tokenizer, clean_ids)
        with torch.no_grad(), hooked(model, {site: lambda v: stored["v"]}):
            return float(scorer(model, tokenizer, corrupt_ids))

    all_heads, whole = patched_everywhere("attn_heads.1"), patched_everywhere("attn_out.1")
    assert all_heads == pytest.approx(whole, abs=1e-4)
    assert heads["clean_score"] == pytest.approx(sweep["clean_score"], abs=1e-4)
