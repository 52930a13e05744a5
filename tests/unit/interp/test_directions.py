"""Directions: the arithmetic by hand, the hooked ablation taking a direction out of the stream at every
layer, and the weight edit computing exactly what the hooked ablation computes, in every architecture whose
layers add their blocks' outputs straight to the stream."""

import pytest
import torch

from tether.interp.directions import (
    ablated,
    ablation,
    added,
    addition,
    mean_difference,
    orthogonalise,
    save_orthogonalised,
    unit,
    writer_sites,
)
from tether.interp.sites import decoder_layers, hooked
from tether.models.tiny import TINY_ARCHITECTURES, build_tiny_model

NORMED = {"gemma2": "sandwich", "gemma3_text": "sandwich", "olmo2": "sandwich", "bloom": "embeddings are normalised"}

# Every architecture runs in the slow tier; these, one of each way a layer is built (sequential and parallel
# blocks, Conv1D, fused and routed experts, sandwich norms, an embedding norm), in every run.
CORE = {"llama", "gpt2", "opt", "gptj", "phi", "mixtral", "qwen2_moe", "llama4_text", "gemma2", "bloom"}
ARCHITECTURES = [a if a in CORE else pytest.param(a, marks=pytest.mark.slow) for a in sorted(TINY_ARCHITECTURES)]


def test_mean_difference_ablation_and_addition_by_hand():
    pos, neg = torch.tensor([[2.0, 0.0], [4.0, 2.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert mean_difference(pos, neg).tolist() == [3.0, 0.0]
    assert unit(torch.tensor([3.0, 4.0])).tolist() == pytest.approx([0.6, 0.8])
    x = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    # Projecting out (1, 0) keeps only the second coordinate; adding 0.5 × (3, 0) moves the first.
    assert ablation(torch.tensor([3.0, 0.0]))(x).tolist() == [[[0.0, 2.0], [0.0, -1.0]]]
    assert addition(torch.tensor([3.0, 0.0]), 0.5)(x).tolist() == [[[2.5, 2.0], [4.5, -1.0]]]
    # At the prompt's end only: the last position of a multi-token pass; a one-token (generation) pass untouched.
    assert addition(torch.tensor([3.0, 0.0]), 0.5, positions="prompt-end")(x).tolist() == [[[1.0, 2.0], [4.5, -1.0]]]
    assert addition(torch.tensor([3.0, 0.0]), positions="prompt-end")(x[:, :1]) is None
    # Ablated over the last span positions only: the first of three untouched, and a generation pass too.
    y = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [-2.0, 5.0]]])
    assert ablation(torch.tensor([3.0, 0.0]), span=2)(y).tolist() == [[[1.0, 2.0], [0.0, -1.0], [0.0, 5.0]]]
    assert ablation(torch.tensor([3.0, 0.0]), span=5)(y).tolist() == [[[0.0, 2.0], [0.0, -1.0], [0.0, 5.0]]]
    assert ablation(torch.tensor([3.0, 0.0]), span=2)(y[:, :1]) is None
    with pytest.raises(ValueError, match="span"):
        ablation(torch.tensor([3.0, 0.0]), span=-1)
    with pytest.raises(ValueError, match="zero vector"):
        unit(torch.zeros(3))
    with pytest.raises(ValueError, match="widths differ"):
        mean_difference(torch.ones(2, 3), torch.ones(2, 4))


def _stream(model, ids):
    seen = {}
    names = [f"resid_post.{n}" for n in range(len(decoder_layers(model)))]

    def keep(name):
        def read(value):
            seen[name] = value.detach().clone()
        return read
    with hooked(model, {n: keep(n) for n in names}):
        logits = model(input_ids=ids).logits
    return logits, seen


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_the_weight_edit_is_the_hooked_ablation(arch, tokenizer):
    model = build_tiny_model(arch, tokenizer, seed=0).eval()
    hidden = model.get_input_embeddings().weight.shape[1]
    direction = torch.randn(hidden, generator=torch.Generator().manual_seed(1))
    r = unit(direction)
    ids = torch.randint(3, 200, (2, 6), generator=torch.Generator().manual_seed(0))
    plain = model(input_ids=ids).logits
    with ablated(model, direction):
        logits, stream = _stream(model, ids)
    # The direction is gone from the stream after every layer, and the output changed.
    for value in stream.values():
        assert (value @ r).abs().max() < 1e-4
    assert not torch.allclose(logits, plain, atol=1e-4)
    # Over the last two positions only: the stream before them is the plain model's (the model is causal),
    # the direction is gone from it at them.
    _, plain_stream = _stream(model, ids)
    with ablated(model, direction, span=2):
        _, tail_stream = _stream(model, ids)
    for name, value in tail_stream.items():
        assert torch.allclose(value[:, :-2], plain_stream[name][:, :-2], atol=1e-5), (arch, name)
        assert (value[:, -2:] @ r).abs().max() < 1e-4
    if arch in NORMED:
        with pytest.raises(ValueError, match=NORMED[arch]):
            orthogonalise(model, direction)
        return
    orthogonalise(model, direction)
    assert torch.allclose(model(input_ids=ids).logits, logits, atol=2e-4), arch


@torch.no_grad()
def test_addition_moves_one_layers_input_and_saved_model_reloads(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_tiny_model("llama", tokenizer, seed=0).eval()
    ids = torch.randint(3, 200, (1, 5), generator=torch.Generator().manual_seed(0))
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    seen = {}
    with added(model, direction, 1, coefficient=2.0), hooked(model, {"resid_pre.1": lambda v: seen.update(v=v)}):
        model(input_ids=ids)
    with hooked(model, {"resid_pre.1": lambda v: seen.update(plain=v)}):
        plain = model(input_ids=ids).logits
    # Hooks run in the order they were attached: the reader after the addition sees it.
    assert torch.allclose(seen["v"] - seen["plain"], (2.0 * direction).expand_as(seen["v"]), atol=1e-5)
    assert writer_sites(model) == ["resid_pre.0", "attn_out.0", "mlp_out.0", "attn_out.1", "mlp_out.1"]

    with ablated(model, direction):
        hooked_logits = model(input_ids=ids).logits
    out = save_orthogonalised(model, tokenizer, direction, tmp_path / "ortho")
    assert torch.allclose(model(input_ids=ids).logits, plain)  # the model passed in is untouched
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert torch.allclose(reloaded(input_ids=ids).logits, hooked_logits, atol=2e-4)
    assert (out / "direction.safetensors").exists()
    with pytest.raises(FileExistsError):
        save_orthogonalised(model, tokenizer, direction, out)
