"""SAEs: the activation functions and their straight-through gradients by hand, each kind's sparsity rule,
the scale folded back exactly, a planted dictionary recovered, SAELens's file format, and the spliced
losses (an SAE that reconstructs exactly recovers all of the loss)."""

import json
import math

import pytest
import torch

from tether.interp.sae import (
    SAEConfig,
    SparseAutoencoder,
    _fold_norms,
    _fold_scale,
    _JumpReLU,
    _Step,
    matryoshka_groups,
    max_activating,
    sae_metrics,
    spliced_losses,
    train_sae,
)


def test_jumprelu_and_step_with_their_straight_through_gradients_by_hand():
    pre = torch.tensor([[0.5, 1.02, 2.0]], requires_grad=True)
    theta = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    out = _JumpReLU.apply(pre, theta, 0.1)
    assert out.tolist() == [[0.0, pytest.approx(1.02), 2.0]]
    out.sum().backward()
    # d/dpre: 1 where it fires; d/dθ: −θ/ε inside the kernel (|pre − θ| < ε/2: only 1.02), 0 elsewhere.
    assert pre.grad.tolist() == [[0.0, 1.0, 1.0]]
    assert theta.grad.tolist() == [0.0, pytest.approx(-10.0), 0.0]
    theta.grad = None
    step = _Step.apply(pre, theta, 0.1)
    assert step.tolist() == [[0.0, 1.0, 1.0]]
    step.sum().backward()
    assert theta.grad.tolist() == [0.0, pytest.approx(-10.0), 0.0]


def test_each_kind_keeps_what_it_should():
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    topk = SparseAutoencoder(8, SAEConfig(kind="topk", width=16, k=3))
    assert ((topk.encode(x) > 0).sum(1) <= 3).all()
    batch = SparseAutoencoder(8, SAEConfig(kind="batchtopk", width=16, k=3))
    f = batch.encode(x, training=True)
    assert int((f > 0).sum()) == 18  # k × rows across the batch, not k per row
    batch.batch_threshold.fill_(0.5)
    inference = batch.encode(x)
    pre = batch.pre(x)
    assert torch.equal(inference > 0, pre > 0.5)  # one threshold: a row does not depend on its batch
    jump = SparseAutoencoder(8, SAEConfig(kind="jumprelu", width=16, initial_threshold=0.3))
    assert torch.equal(jump.encode(x) > 0, jump.pre(x) > 0.3)


def test_folding_the_scale_changes_nothing_but_the_units():
    sae = SparseAutoencoder(8, SAEConfig(kind="topk", width=16, k=4, seed=3))
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    scale = 2.5
    expected = sae(x * scale) / scale
    _fold_scale(sae, scale)
    assert torch.allclose(sae(x), expected, atol=1e-5)


def test_folding_the_decoder_norms_keeps_what_training_computed():
    # In training a TopK feature's activation is its pre-activation times its decoder row's norm, and it
    # decodes through the unit row; folded, the SAE computes the same with unit rows.
    sae = SparseAutoencoder(8, SAEConfig(kind="topk", width=16, k=4, seed=3))
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(16, 1, generator=torch.Generator().manual_seed(2)) * 2 + 0.05)
        sae.b_enc.normal_()
    assert sae.W_dec.norm(dim=1).min() < 0.5  # rows of other norms than 1 (0.1 at the start)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    norms = sae.W_dec.norm(dim=1)
    top = torch.relu(sae.pre(x) * norms).topk(4, dim=1)
    expected = torch.einsum("bk,bkd->bd", top.values, (sae.W_dec / norms[:, None])[top.indices]) + sae.b_dec
    _fold_norms(sae)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16), atol=1e-6)
    assert torch.allclose(sae(x), expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "matryoshka", "jumprelu"])
def test_a_planted_sparse_dictionary_is_recovered(kind):
    # 3,000 rows, each a sum of 3 of 32 planted unit directions in 16 dimensions with positive weights.
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(32, 16, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    picks = torch.stack([torch.randperm(32, generator=g)[:3] for _ in range(3000)])
    weights = torch.rand(3000, 3, generator=g) + 0.5
    x = (weights.unsqueeze(-1) * atoms[picks]).sum(1) * 7.0  # not unit scale: the normalising must cope
    cfg = SAEConfig(kind=kind, width=64, k=3, l0_coefficient=0.01, epochs=12, batch_size=256, lr=3e-3,
                    dead_after=2000)
    sae, log = train_sae(x[:2400], cfg, site="resid_pre.1")
    metrics = sae_metrics(sae, x[2400:])
    # Held-out rows: most of the variance explained with a handful of features (a dense code would need 16).
    assert metrics["explained_variance"] > 0.75, (kind, metrics, log["log"][-1])
    assert 1.5 <= metrics["l0"] <= 8, metrics
    assert log["rows_per_s"] > 0 and log["steps"] == math.ceil(12 * 2400 / 256)


def test_matryoshka_groups_and_the_first_group_standing_alone():
    assert matryoshka_groups(SAEConfig(kind="matryoshka", width=64)) == [8, 16, 32, 64]
    assert matryoshka_groups(SAEConfig(kind="matryoshka", width=64, groups=[4, 64])) == [4, 64]
    for bad in ([64, 4], [4, 32], [0, 64]):
        with pytest.raises(ValueError, match="ascending sizes"):
            matryoshka_groups(SAEConfig(kind="matryoshka", width=64, groups=bad))
    # Trained on nested prefixes, the first 8 features reconstruct alone better than a BatchTopK SAE's.
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(32, 16, generator=g)
    picks = torch.stack([torch.randperm(32, generator=g)[:3] for _ in range(3000)])
    x = ((torch.rand(3000, 3, generator=g) + 0.5).unsqueeze(-1) * atoms[picks]).sum(1)

    def first_eight(kind):
        sae, _ = train_sae(x[:2400], SAEConfig(kind=kind, width=64, k=3, epochs=8, batch_size=256, lr=3e-3))
        with torch.no_grad():
            f = sae.encode(x[2400:])
            alone = f[:, :8] @ sae.W_dec[:8] + sae.b_dec
        held = x[2400:]
        return float(1 - ((held - alone) ** 2).sum() / ((held - held.mean(0)) ** 2).sum())

    # 8 of 64 features can hold at most a quarter of the 32 atoms: 0.33 against 0.24 explained here.
    assert first_eight("matryoshka") > first_eight("batchtopk") + 0.05


def test_save_in_saelens_format_and_load_back(tmp_path):
    for kind in ("topk", "batchtopk", "matryoshka", "jumprelu"):
        sae = SparseAutoencoder(8, SAEConfig(kind=kind, width=16, k=2), site="resid_post.0")
        sae.batch_threshold.fill_(0.2)
        path = sae.save(tmp_path / kind)
        cfg = json.loads((path / "cfg.json").read_text())
        assert cfg["d_in"] == 8 and cfg["d_sae"] == 16 and cfg["architecture"] == ("topk" if kind == "topk"
                                                                                   else "jumprelu")
        x = torch.randn(4, 8)
        assert torch.allclose(SparseAutoencoder.load(path)(x), sae(x), atol=1e-6)


@torch.no_grad()
def test_an_exact_sae_recovers_all_of_the_loss_and_max_activating_rows(tokenizer):
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model("llama", tokenizer, seed=0).eval()
    d = model.config.hidden_size
    # Features relu(x) and relu(−x) with a vanishing threshold decode back to x exactly.
    sae = SparseAutoencoder(d, SAEConfig(kind="jumprelu", width=2 * d, initial_threshold=1e-12), site="resid_post.0")
    eye = torch.eye(d)
    sae.W_enc.copy_(torch.cat([eye, -eye], 1))
    sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    losses = spliced_losses(model, tokenizer, ["a short text", "another one here, longer"], sae)
    assert losses["ce_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert losses["kl_sae"] == pytest.approx(0.0, abs=1e-5) and losses["kl_zero"] > 0
    acts = torch.tensor([[1.0] + [0.0] * (d - 1), [3.0] + [0.0] * (d - 1), [-2.0] + [0.0] * (d - 1)])
    top = max_activating(sae, acts, [{"i": 0}, {"i": 1}, {"i": 2}], [0, d], top=2)
    assert [row["i"] for _, row in top[0]] == [1, 0] and [row["i"] for _, row in top[d]] == [2]
