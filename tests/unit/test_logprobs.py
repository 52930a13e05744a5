import math

import pytest
import torch

from tether.models.logprobs import completion_logps, gather_token_logps, position_ids_from_mask


def test_gather_equals_log_softmax_hand_worked():
    # logits [0, ln 3] -> softmax [0.25, 0.75]; target 1 -> ln 0.75
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert math.isclose(float(gather_token_logps(logits, torch.tensor([1]))), math.log(0.75), rel_tol=1e-6)
    logits = torch.randn(7, 11)
    targets = torch.randint(0, 11, (7,))
    expected = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(gather_token_logps(logits, targets), expected)


def test_position_ids_ignore_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def _naive(model, ids, attn, scored):
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits
    logps = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logps * scored[:, 1:]).sum(-1)


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_matches_full_log_softmax_and_is_chunk_invariant(tiny_llama, chunk_size):
    torch.manual_seed(0)
    ids = torch.randint(0, 200, (3, 9))
    attn = torch.ones_like(ids)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    scored[:, 4:] = True
    with torch.no_grad():
        out = completion_logps(tiny_llama, ids, attn, scored, chunk_size=chunk_size)
        expected = _naive(tiny_llama, ids, attn, scored)
    torch.testing.assert_close(out.sequence_logps, expected, atol=1e-5, rtol=1e-5)
    assert out.num_tokens.tolist() == [5, 5, 5]
    assert (out.token_logps[:, :4] == 0).all()


def test_left_and_right_padding_agree(tiny_llama):
    seq = torch.tensor([5, 6, 7, 8, 9])
    right = torch.tensor([[5, 6, 7, 8, 9, 0, 0]])
    left = torch.tensor([[0, 0, 5, 6, 7, 8, 9]])
    r_attn = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    l_attn = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        r = completion_logps(tiny_llama, right, r_attn, r_attn.bool())
        left_out = completion_logps(tiny_llama, left, l_attn, l_attn.bool())
    torch.testing.assert_close(r.sequence_logps, left_out.sequence_logps, atol=1e-5, rtol=1e-5)
    assert int(r.num_tokens) == len(seq) - 1


@pytest.mark.parametrize("keep_bytes", [0, 2**40])  # logits recomputed in backward, or kept
def test_gradients_match_naive(tokenizer, keep_bytes, monkeypatch):
    import tether.models.logprobs as logprobs
    from tether.models.tiny import build_tiny_model

    monkeypatch.setattr(logprobs, "KEEP_LOGITS_BYTES", keep_bytes)

    model = build_tiny_model("llama", tokenizer, seed=1)
    ids = torch.randint(0, 200, (2, 6))
    attn = torch.ones_like(ids)
    scored = torch.ones_like(ids, dtype=torch.bool)
    completion_logps(model, ids, attn, scored, chunk_size=2).sequence_logps.sum().backward()
    chunked = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    _naive(model, ids, attn, scored).sum().backward()
    for a, p in zip(chunked, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)


def test_recomputing_the_logits_in_backward_changes_no_gradient_bit(tokenizer, monkeypatch):
    # Whether logits are kept or recomputed is a memory choice; a world build must not depend on it.
    import tether.models.logprobs as logprobs
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model("llama", tokenizer, seed=1)
    ids = torch.randint(0, 200, (3, 40), generator=torch.Generator().manual_seed(0))
    grads = []
    for keep in (0, 2**40):
        monkeypatch.setattr(logprobs, "KEEP_LOGITS_BYTES", keep)
        model.zero_grad()
        completion_logps(model, ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool),
                         chunk_size=16).sequence_logps.sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_packed_rows_equal_separate_documents(tiny_llama):
    # Two documents packed in one row, attention isolated by restarting positions, must score
    # exactly as the two documents run on their own.
    doc_a, doc_b = [11, 12, 13, 14], [21, 22, 23]
    packed = torch.tensor([doc_a + doc_b])
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
    with torch.no_grad():
        together = completion_logps(tiny_llama, packed, torch.ones_like(packed), torch.ones_like(packed).bool(),
                                    position_ids=positions)
        alone = [completion_logps(tiny_llama, torch.tensor([d]), torch.ones(1, len(d), dtype=torch.long),
                                  torch.ones(1, len(d), dtype=torch.bool)) for d in (doc_a, doc_b)]
    expected = torch.cat([alone[0].token_logps[0], alone[1].token_logps[0]])
    torch.testing.assert_close(together.token_logps[0], expected, atol=1e-5, rtol=1e-5)
    assert int(together.num_tokens) == (len(doc_a) - 1) + (len(doc_b) - 1)


def _prefix_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (3, 7, 5)]
    rows = [0, 0, 1, 2, 1, 0]   # completions of three prompts, interleaved, one prompt used thrice
    completions = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (4, 1, 6, 2, 3, 5)]
    return [prompts[r] for r in rows], completions


@pytest.mark.parametrize("arch", ["llama", "qwen3", "phi3", "gpt2", "gpt_neox", "opt", "gemma2"])
def test_shared_prompts_give_the_concatenated_rows_log_probs_and_gradients(tokenizer, arch):
    from tether.data.collate import pad_batch, prefix_batch
    from tether.data.records import TokenizedExample
    from tether.models.logprobs import prefix_logps, prefix_sharing_supported
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model(arch, tokenizer, seed=2)
    if arch == "gemma2":  # sliding-window layers keep a cache that is not repeated: the caller falls back
        assert not prefix_sharing_supported(model)
        return
    assert prefix_sharing_supported(model)
    prompts, completions = _prefix_case()
    batch = prefix_batch(prompts, completions, tokenizer.pad_token_id)
    assert batch.prompt_ids.shape == (3, 7) and batch.prompt_of.tolist() == [0, 0, 1, 2, 1, 0]
    shared = prefix_logps(model, batch)
    shared.sum().backward()
    grads = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
    model.zero_grad()
    rows = pad_batch([TokenizedExample(p + c, [False] * len(p) + [True] * len(c))
                      for p, c in zip(prompts, completions, strict=True)], tokenizer.pad_token_id)
    full = completion_logps(model, rows.input_ids, rows.attention_mask, rows.loss_mask).token_logps
    full.sum().backward()
    for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        torch.testing.assert_close(shared[row, :len(c)], full[row, len(p):len(p) + len(c)], atol=1e-5, rtol=1e-5)
        assert (shared[row, len(c):] == 0).all()
    for a, p in zip(grads, model.parameters(), strict=True):
        if a is None:
            assert p.grad is None or not p.grad.any()
        else:
            torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)
    assert batch.scored_tokens() == sum(map(len, completions))
    assert batch.num_tokens() == int(rows.attention_mask.sum())


def test_shared_prompts_are_refused_under_gradient_checkpointing_for_training_only(tokenizer):
    from tether.data.collate import prefix_batch
    from tether.models.loading import enable_checkpointing
    from tether.models.logprobs import prefix_sharing_supported
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model("llama", tokenizer, seed=0)
    enable_checkpointing(model)
    assert not prefix_sharing_supported(model) and prefix_sharing_supported(model, training=False)
    with pytest.raises(ValueError, match="non-empty prompts"):
        prefix_batch([[], [1]], [[2], [3]], 0)
