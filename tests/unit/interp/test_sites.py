"""One name for a place in every architecture tether supports: the residual stream agrees with
transformers' own hidden states, the attention and MLP outputs add up to what a layer adds, and an edit
at a site changes what the model computes."""

import pytest
import torch

from tether.interp.sites import Site, decoder_layers, head_count, hooked, resolve
from tether.models.tiny import TINY_ARCHITECTURES, build_tiny_model


@pytest.mark.parametrize("arch", sorted(TINY_ARCHITECTURES))
def test_sites_read_the_same_places_in_every_architecture(arch, tokenizer):
    model = build_tiny_model(arch, tokenizer, seed=0).eval()
    n = len(decoder_layers(model))
    ids = torch.randint(3, 200, (2, 7), generator=torch.Generator().manual_seed(0))
    names = [f"{kind}.{layer}" for layer in range(n) for kind in ("resid_pre", "resid_post", "attn_out", "mlp_out")]
    seen = {}

    def keep(name):
        def read(value):
            seen[name] = value.detach().clone()
        return read

    with torch.no_grad(), hooked(model, {name: keep(name) for name in names}):
        out = model(input_ids=ids, output_hidden_states=True)
    hidden = out.hidden_states
    for layer in range(n):
        assert torch.allclose(seen[f"resid_pre.{layer}"], hidden[layer], atol=1e-5)
        if layer + 1 < n:
            assert torch.allclose(seen[f"resid_post.{layer}"], hidden[layer + 1], atol=1e-5)
        added = seen[f"attn_out.{layer}"] + seen[f"mlp_out.{layer}"]
        assert torch.allclose(seen[f"resid_post.{layer}"], seen[f"resid_pre.{layer}"] + added, atol=1e-4), arch

    # An edit at a site reaches the output: zeroing the last MLP's contribution changes the logits.
    with torch.no_grad(), hooked(model, {"mlp_out.-1": torch.zeros_like}):
        edited = model(input_ids=ids).logits
    assert not torch.allclose(edited, out.logits)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, out.logits)  # the hooks are gone after the block


@pytest.mark.parametrize("arch", sorted(TINY_ARCHITECTURES))
def test_one_heads_output_is_one_slice_before_the_output_projection(arch, tokenizer):
    model = build_tiny_model(arch, tokenizer, seed=0).eval()
    ids = torch.randint(3, 200, (2, 7), generator=torch.Generator().manual_seed(0))
    seen = {}

    def keep(name):
        def read(value):
            seen[name] = value.detach().clone()
        return read

    with torch.no_grad(), hooked(model, {"attn_heads.0": keep("heads"), "attn_out.0": keep("out")}):
        model(input_ids=ids)
    heads, width = head_count(model), seen["heads"].shape[-1]
    assert seen["heads"].shape[:2] == ids.shape and width % heads == 0, (arch, width, heads)
    d = width // heads

    def without_head_0(value):
        edited = value.clone()
        edited[..., :d] = 0
        return edited

    with torch.no_grad(), hooked(model, {"attn_heads.0": without_head_0, "attn_out.0": keep("out_without")}):
        model(input_ids=ids)
    assert not torch.allclose(seen["out_without"], seen["out"])
    if not hasattr(decoder_layers(model)[0], "post_feedforward_layernorm"):  # no norm after the projection
        # What the layer adds loses exactly head 0's slice through the output projection.
        projection = resolve(model, "attn_heads.0").module
        only = torch.zeros_like(seen["heads"])
        only[..., :d] = seen["heads"][..., :d]
        with torch.no_grad():
            head_0 = projection(only) - projection(torch.zeros_like(only))
        assert torch.allclose(seen["out_without"], seen["out"] - head_0, atol=1e-4), arch


def test_names_parse_and_bad_ones_say_why(tokenizer):
    assert Site.parse("resid_post.3") == Site("resid_post", 3) and Site.parse("mlp_out.-1").layer == -1
    model = build_tiny_model("llama", tokenizer)
    assert resolve(model, "attn_out.-1").site == Site("attn_out", 1)
    with pytest.raises(ValueError, match="KIND.LAYER"):
        Site.parse("residual.2")
    with pytest.raises(ValueError, match="layers 0..1"):
        resolve(model, "resid_pre.5")
