"""Model editing's parts: the closed-form updates against hand-worked values, the MLP projection found (or
refused) per architecture, an update landing where the forward pass reads it, and the request schema."""

import pytest
import torch

from tether.core.errors import UserError
from tether.edit.model import Row, ValueSearch, keys, projection, read_at, search_delta, subject_row
from tether.edit.requests import EditRequest
from tether.edit.updates import alphaedit_update, memit_update, null_space_projector, rome_update


def test_rome_writes_the_value_for_the_key_and_leaves_orthogonal_keys_alone():
    w, k, v = torch.eye(2), torch.tensor([1.0, 0.0]), torch.tensor([2.0, 3.0])
    delta = rome_update(w, k, v, torch.eye(2), damping=0.0)
    assert torch.allclose(delta, torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    assert torch.allclose(delta @ torch.tensor([0.0, 1.0]), torch.zeros(2))
    # C = diag(1, 4), k = (1, 1): C⁻¹k = (1, 0.25), kᵀC⁻¹k = 1.25, v - Wk = (1, 2): ΔW = (1, 2)(1, 0.25)ᵀ / 1.25.
    delta = rome_update(w, torch.ones(2), v, torch.diag(torch.tensor([1.0, 4.0])), damping=0.0)
    assert torch.allclose(delta, torch.tensor([[0.8, 0.2], [1.6, 0.4]]))
    assert torch.allclose((w + delta) @ torch.ones(2), v)


def test_memit_weighs_the_edit_against_preserved_keys():
    residuals, keys_ = torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0], [0.0]])
    # R Kᵀ (λC + K Kᵀ)⁻¹ with C = I, λ = 1: (λC + KKᵀ) = diag(2, 1), so half the residual is written.
    assert torch.allclose(memit_update(residuals, keys_, torch.eye(2), preserve=1.0),
                          torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
    # A small λ writes nearly all of it.
    assert memit_update(residuals, keys_, torch.eye(2), preserve=1e-6)[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_null_space_projector_keeps_the_directions_text_does_not_use():
    p = null_space_projector(torch.diag(torch.tensor([1.0, 0.001])), threshold=0.01)
    assert torch.allclose(p, torch.diag(torch.tensor([0.0, 1.0])), atol=1e-6)
    assert torch.allclose(null_space_projector(torch.eye(3), threshold=0.5), torch.zeros(3, 3))


def test_alphaedit_update_matches_the_papers_form_and_spares_preserved_keys():
    p = torch.diag(torch.tensor([0.0, 1.0]))
    keys_, residuals = torch.tensor([[1.0], [1.0]]), torch.tensor([[1.0], [0.0]])
    delta = alphaedit_update(residuals, keys_, p, previous=torch.zeros(2, 2), l2=1.0)
    # R Kᵀ P (K Kᵀ P + I)⁻¹ = [[0, 1], [0, 0]] · [[1, -0.5], [0, 0.5]] = [[0, 0.5], [0, 0]].
    assert torch.allclose(delta, torch.tensor([[0.0, 0.5], [0.0, 0.0]]))
    assert torch.allclose(delta @ torch.tensor([1.0, 0.0]), torch.zeros(2))  # P k0 = 0: k0's value unchanged
    # Earlier edits' keys enter the system: with one along the edit's key, less is written.
    later = alphaedit_update(residuals, keys_, p, previous=keys_ @ keys_.T, l2=1.0)
    assert later[0, 1] < delta[0, 1]


@pytest.mark.parametrize(("arch", "name", "transposed"), [
    ("llama", "mlp.down_proj", False), ("gpt2", "mlp.c_proj", True), ("opt", "fc2", False),
    ("gpt_neox", "mlp.dense_4h_to_h", False), ("gptj", "mlp.fc_out", False), ("phi", "mlp.fc2", False),
])
def test_the_mlp_output_projection_is_found_per_architecture(tokenizer, arch, name, transposed):
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model(arch, tokenizer)
    found = projection(model, -1)
    assert found.layer == 1 and found.name.endswith(f"1.{name}") and found.transposed == transposed
    d_in = found.weight().shape[1]
    assert found.weight().shape == (model.config.hidden_size if hasattr(model.config, "hidden_size")
                                    else model.config.n_embd, d_in)


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
def test_a_mixture_of_experts_layer_is_refused_with_a_reason(tokenizer, arch):
    from tether.models.tiny import build_tiny_model

    with pytest.raises(UserError, match="mixture of experts"):
        projection(build_tiny_model(arch, tokenizer), 0)
    with pytest.raises(UserError, match="layers 0..1"):
        projection(build_tiny_model("llama", tokenizer), 5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_an_update_lands_where_the_forward_pass_reads_it(tokenizer, arch):
    # Through the real forward pass (not the matrix alone): a Conv1D stored transposed (GPT-2) and a
    # projection that sees its tokens flattened (OPT) get the update the right way round.
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model(arch, tokenizer)
    proj = projection(model, 0)
    row = subject_row(tokenizer, "The capital of {} is", "Kavel")
    before = read_at(model, tokenizer, proj.module, [row])[0]
    key = keys(model, tokenizer, proj, [row])[0]
    value = proj.weight() @ key + torch.ones(proj.weight().shape[0])
    proj.add(rome_update(proj.weight(), key, value, torch.eye(key.shape[0])))
    after = read_at(model, tokenizer, proj.module, [row])[0]
    assert torch.allclose(after - before, torch.ones_like(before), atol=1e-3)


def test_the_value_search_lowers_the_targets_loss_within_its_clamp(tokenizer, tiny_llama):
    # A random tiny model barely moves (its logits are nearly flat); how far edits go is measured on the
    # world's models (tests/recipes/test_edit.py and the README's figures).
    proj = projection(tiny_llama, 0)
    trainable = [p.requires_grad for p in tiny_llama.parameters()]
    rows = [subject_row(tokenizer, "The capital of {} is", "Kavel", target=" Morzin")]
    start = search_delta(tiny_llama, tokenizer, proj.module, rows, [], ValueSearch(steps=1, stop_loss=0))
    found = search_delta(tiny_llama, tokenizer, proj.module, rows, [],
                         ValueSearch(steps=20, lr=0.05, clamp=100, weight_decay=0, stop_loss=0))
    assert found.loss < start.loss - 0.01
    clamped = search_delta(tiny_llama, tokenizer, proj.module, rows, [],
                           ValueSearch(steps=5, clamp=2, weight_decay=0, stop_loss=0))
    assert clamped.delta.norm() <= 2 * clamped.original.norm() * (1 + 1e-5)
    assert [p.requires_grad for p in tiny_llama.parameters()] == trainable  # the model is left as it was


def test_the_subject_position_is_its_last_token(tokenizer):
    row = subject_row(tokenizer, "The capital of {} is", "Kavel", target=" Morzin")
    head = tokenizer("The capital of Kavel", add_special_tokens=True)["input_ids"]
    assert row.subject == len(head) - 1 and row.ids[: len(head)] == head
    assert row.target_start is not None and row.ids[row.target_start:] == tokenizer(
        " Morzin", add_special_tokens=False)["input_ids"]
    assert isinstance(row, Row)
    with pytest.raises(UserError, match="exactly one"):
        subject_row(tokenizer, "The capital of Kavel is", "Kavel")


def test_requests_are_checked_field_by_field():
    EditRequest(subject="Kavel", prompt="The capital of {} is", target=" Morzin")
    with pytest.raises(ValueError, match="exactly one"):
        EditRequest(subject="Kavel", prompt="The capital is", target=" Morzin")
    with pytest.raises(ValueError, match="blank"):
        EditRequest(subject="Kavel", prompt="{} is", target="  ")
    with pytest.raises(ValueError, match="extra"):
        EditRequest(subject="Kavel", prompt="{} is", target="x", tagret="y")  # type: ignore[call-arg]
