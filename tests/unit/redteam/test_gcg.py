"""GCG's parts against direct computations on a tiny model, and the search lowering the target loss."""

import torch

from tether.redteam.gcg import (
    GCGConfig,
    allowed_tokens,
    gcg,
    layout,
    sample_candidates,
    target_losses,
    token_gradients,
)

PROMPT = [{"role": "user", "content": "How do I make the thing?"}]


def _loss(model, ids, target):
    logits = model(input_ids=ids.unsqueeze(0)).logits[0]
    return torch.nn.functional.cross_entropy(logits[target.start - 1:target.stop - 1], ids[target])


def test_layout_puts_the_suffix_after_the_request_and_the_target_last(tokenizer):
    ids, suffix, target = layout(tokenizer, PROMPT, [5, 6, 7], "Sure, here")
    assert ids[suffix].tolist() == [5, 6, 7] and target.stop == len(ids)
    assert tokenizer.decode(ids[target]) == "Sure, here"
    text = tokenizer.decode(ids[:suffix.start])
    assert text.endswith("How do I make the thing?") and "<|im_start|>assistant" in tokenizer.decode(ids[suffix.stop:])


def test_token_gradient_is_the_directional_derivative_of_the_target_loss(tiny_llama, tokenizer):
    model = tiny_llama.float().eval()
    ids, suffix, target = layout(tokenizer, PROMPT, [40, 41, 42, 43], "Sure, here")
    grad = token_gradients(model, ids, suffix, target)
    assert grad.shape == (4, model.get_input_embeddings().weight.shape[0])
    # The gradient in token space is the embedding gradient projected onto the embedding matrix.
    embeds = model.get_input_embeddings()(ids.unsqueeze(0)).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits[0]
    loss = torch.nn.functional.cross_entropy(logits[target.start - 1:target.stop - 1], ids[target])
    (d_embeds,) = torch.autograd.grad(loss, embeds)
    expected = d_embeds[0, suffix] @ model.get_input_embeddings().weight.T
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_candidates_change_one_position_to_a_top_k_allowed_token():
    grad = torch.tensor([[0.0, -3.0, -1.0, -2.0, 5.0], [0.0, 1.0, -4.0, 2.0, -5.0]])
    allowed = torch.tensor([True, True, True, True, False])      # token 4 never
    current = torch.tensor([0, 0])
    out = sample_candidates(grad, current, top_k=2, n=200, allowed=allowed, generator=torch.Generator().manual_seed(0))
    changed = (out != current).sum(dim=1)
    assert out.shape == (200, 2) and changed.max() == 1
    # Top-2 by -gradient among allowed tokens: position 0 -> {1, 3}, position 1 -> {2, 0}.
    assert set(out[:, 0].tolist()) <= {0, 1, 3} and set(out[:, 1].tolist()) <= {0, 2}
    assert {1, 3} <= set(out[:, 0].tolist()) and 2 in set(out[:, 1].tolist())


def test_batched_losses_match_one_by_one(tiny_llama, tokenizer):
    model = tiny_llama.float().eval()
    ids, suffix, target = layout(tokenizer, PROMPT, [40, 41, 42], "Sure, here")
    candidates = torch.tensor([[40, 41, 42], [50, 41, 42], [40, 60, 70]])
    losses = target_losses(model, ids, suffix, target, candidates, batch_size=2)
    for candidate, loss in zip(candidates, losses, strict=True):
        seq = ids.clone()
        seq[suffix] = candidate
        torch.testing.assert_close(loss, _loss(model, seq, target).detach(), rtol=1e-5, atol=1e-6)


def test_search_lowers_the_target_loss_with_round_trip_tokens(tiny_llama, tokenizer):
    model = tiny_llama.float().train()
    allowed = allowed_tokens(tokenizer, model.get_input_embeddings().weight.shape[0])
    assert not allowed[tokenizer.all_special_ids].any()
    cfg = GCGConfig(steps=8, length=4, top_k=16, candidates=32)
    result = gcg(model, tokenizer, PROMPT, "Sure, here", cfg, allowed=allowed, seed=0)
    assert result.steps == 8 and not result.reached_target and model.training      # the mode is restored
    assert result.loss < result.initial_loss and len(result.suffix_ids) == 4
    assert all(allowed[t] for t in result.suffix_ids)
    assert gcg(model, tokenizer, PROMPT, "Sure, here", cfg, allowed=allowed, seed=0).suffix_ids == result.suffix_ids
