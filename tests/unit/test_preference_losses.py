"""DPO family, KTO, SimPO and Bradley-Terry: hand-worked values, an independent scalar implementation
of each published formula, and (with the dev extra) parity with TRL's own code to 1e-5.

TRL keeps these losses inside trainer methods; the parity tests call those methods with a
stand-in ``self`` that holds only what the loss code reads, and a stand-in model whose outputs
are our per-token log-probs. What runs is TRL's arithmetic, line for line.
"""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from tether.losses.preference import PREFERENCE_LOSSES, PairLogps, kto_loss, kto_reference_point, simpo_loss
from tether.losses.reward import bradley_terry_loss, ensemble_scores


def dpo_loss(pc, pr, rc, rr, *, variant="sigmoid", chosen_tokens=None, rejected_tokens=None, **knobs):
    """A reference-based variant called as the DPO recipe calls it: through the registry, on PairLogps. The
    parametrised tests pass every knob; those the variant does not have must be at their neutral value."""
    kind = PREFERENCE_LOSSES.get(variant)
    dropped = {k: v for k, v in knobs.items() if k not in kind.config.model_fields}
    assert all(v in (0.0, False) for v in dropped.values()), dropped
    nc = chosen_tokens if chosen_tokens is not None else torch.ones_like(pc)
    nr = rejected_tokens if rejected_tokens is not None else torch.ones_like(pr)
    return kind.fn(PairLogps(pc, pr, nc, nr), PairLogps(rc, rr, nc, nr),
                   **{k: v for k, v in knobs.items() if k not in dropped})


def _logsig(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def test_hand_worked_values():
    one = torch.tensor([1.0])
    zero, minus = torch.tensor([0.0]), torch.tensor([-1.0])
    assert dpo_loss(one, minus, zero, zero, beta=0.5).losses.item() == pytest.approx(0.31326, abs=1e-5)
    assert dpo_loss(one, minus, zero, zero, beta=0.5, variant="hinge").losses.item() == 0.0
    robust = dpo_loss(one, minus, zero, zero, beta=0.5, variant="robust", label_smoothing=0.1)
    assert robust.losses.item() == pytest.approx(0.18826, abs=1e-5)
    simpo = simpo_loss(PairLogps(torch.tensor([-4.0]), torch.tensor([-9.0]), torch.tensor([4.0]), torch.tensor([3.0])),
                       beta=2.0, gamma=1.0)
    assert simpo.losses.item() == pytest.approx(0.048587, abs=1e-6)
    kto = kto_loss(torch.tensor([2.0, 2.0]), torch.zeros(2), torch.tensor([True, False]), 0.0, beta=0.5)
    assert kto.losses.tolist() == pytest.approx([0.268941, 0.731059], abs=1e-6)
    bt = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), margin=torch.tensor([0.5]), center_coef=0.01)
    assert bt.losses.item() == pytest.approx(0.564077, abs=1e-6) and bt.correct.item()
    ens = ensemble_scores(torch.tensor([[1.0], [3.0]]))
    assert (ens.mean.item(), ens.min.item(), ens.std.item(), ens.conservative(1.0).item()) == (2.0, 1.0, 1.0, 1.0)
    assert kto_reference_point(torch.tensor([1.0, -3.0]), torch.zeros(2)).item() == 0.0  # clamped at 0
    apo = dpo_loss(one, minus, zero, zero, beta=0.5, variant="apo-zero")
    assert apo.losses.item() == pytest.approx(0.75508, abs=1e-5)
    assert dpo_loss(zero, zero, zero, zero, variant="apo-zero").losses.item() == pytest.approx(1.0)


@pytest.fixture()
def pairs():
    g = torch.Generator().manual_seed(0)
    return {k: -torch.rand(16, generator=g) * 30 for k in ("pc", "pr", "rc", "rr")} | {
        "nc": torch.randint(1, 20, (16,), generator=g).float(), "nr": torch.randint(1, 20, (16,), generator=g).float()}


@pytest.mark.parametrize(("variant", "eps"), [("sigmoid", 0.0), ("sigmoid", 0.2), ("robust", 0.2), ("hinge", 0.0),
                                              ("ipo", 0.0), ("apo-zero", 0.0)])
def test_dpo_matches_a_scalar_implementation_of_the_paper(pairs, variant, eps):
    beta = 0.1
    got = dpo_loss(pairs["pc"], pairs["pr"], pairs["rc"], pairs["rr"], beta=beta, variant=variant,
                   label_smoothing=eps, chosen_tokens=pairs["nc"], rejected_tokens=pairs["nr"])
    for i in range(16):
        c = pairs["pc"][i].item() - pairs["rc"][i].item()
        r = pairs["pr"][i].item() - pairs["rr"][i].item()
        h = c - r
        if variant == "sigmoid":
            want = -(1 - eps) * _logsig(beta * h) - eps * _logsig(-beta * h)
        elif variant == "robust":
            want = ((1 - eps) * -_logsig(beta * h) - eps * -_logsig(-beta * h)) / (1 - 2 * eps)
        elif variant == "hinge":
            want = max(0.0, 1 - beta * h)
        elif variant == "apo-zero":
            want = (1 - 1 / (1 + math.exp(-beta * c))) + 1 / (1 + math.exp(-beta * r))
        else:
            want = (c / pairs["nc"][i].item() - r / pairs["nr"][i].item() - 1 / (2 * beta)) ** 2
        assert got.losses[i].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert got.chosen_rewards.tolist() == pytest.approx((beta * (pairs["pc"] - pairs["rc"])).tolist())


def test_losses_fall_as_the_chosen_completion_becomes_likelier(pairs):
    for variant, eps in (("sigmoid", 0.0), ("robust", 0.1), ("hinge", 0.0)):
        pc = pairs["pc"].clone().requires_grad_()
        dpo_loss(pc, pairs["pr"], pairs["rc"], pairs["rr"], beta=0.1, variant=variant,
                 label_smoothing=eps).losses.sum().backward()
        assert (pc.grad <= 0).all(), variant
    # cDPO and IPO aim at a finite gap: past it, they push the chosen completion back down.
    far = torch.tensor([50.0], requires_grad=True)
    zero = torch.zeros(1)
    dpo_loss(far, zero, zero, zero, beta=0.1, label_smoothing=0.2).losses.sum().backward()
    assert far.grad.item() > 0


def test_simpo_and_kto_scalar(pairs):
    got = simpo_loss(PairLogps(pairs["pc"], pairs["pr"], pairs["nc"], pairs["nr"]), beta=2.0, gamma=0.7,
                     label_smoothing=0.1)
    desirable = torch.arange(16) % 3 != 0
    z0 = 0.3
    kto = kto_loss(pairs["pc"], pairs["rc"], desirable, z0, beta=0.2, desirable_weight=1.0, undesirable_weight=1.5)
    for i in range(16):
        x = 2.0 * (pairs["pc"][i].item() / pairs["nc"][i].item() - pairs["pr"][i].item() / pairs["nr"][i].item()) - 0.7
        assert got.losses[i].item() == pytest.approx(-0.9 * _logsig(x) - 0.1 * _logsig(-x), rel=1e-5)
        r = pairs["pc"][i].item() - pairs["rc"][i].item()
        sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
        want = 1 - sig(0.2 * (r - z0)) if desirable[i] else 1.5 * (1 - sig(0.2 * (z0 - r)))
        assert kto.losses[i].item() == pytest.approx(want, rel=1e-5)


# --- parity with TRL ------------------------------------------------------------------------------

class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    gather = gather_for_metrics


def _stand_in(**attrs):
    base = dict(accelerator=_Accelerator(), model=SimpleNamespace(training=True), _tp_size=1, _total_train_tokens=0,
                _metrics=defaultdict(lambda: defaultdict(list)))
    return SimpleNamespace(**(base | attrs))


def _token_logps(sums, lengths, width=24):
    """Per-token log-probs that sum to ``sums`` over the first ``lengths`` completion positions."""
    per_token = torch.zeros(len(sums), width)
    mask = torch.zeros(len(sums), width + 1, dtype=torch.long)
    for i, (s, n) in enumerate(zip(sums.tolist(), lengths.long().tolist(), strict=True)):
        per_token[i, :n] = s / n
        mask[i, 1:n + 1] = 1
    return per_token, mask


@pytest.mark.parametrize(("variant", "eps"), [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.2),
                                              ("apo-zero", 0.0)])
def test_dpo_parity_with_trl(pairs, variant, eps):
    trl = pytest.importorskip("trl.trainer.dpo_trainer", reason="TRL comes with the dev extra")
    beta = 0.1
    per_token, mask = _token_logps(torch.cat([pairs["pc"], pairs["pr"]]), torch.cat([pairs["nc"], pairs["nr"]]))
    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                              mean_logits=torch.zeros_like(per_token), is_top1=torch.zeros_like(per_token).bool())
    inputs = {"input_ids": torch.zeros_like(mask), "attention_mask": torch.ones_like(mask), "completion_mask": mask,
              "ref_chosen_logps": pairs["rc"], "ref_rejected_logps": pairs["rr"]}
    me = _stand_in(aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
                   loss_types=[variant.replace("-", "_")], loss_weights=[1.0], beta=beta, label_smoothing=eps,
                   use_weighting=False)
    theirs = trl.DPOTrainer._compute_loss(me, lambda **_: outputs, inputs, return_outputs=False)
    ours = dpo_loss(pairs["pc"], pairs["pr"], pairs["rc"], pairs["rr"], beta=beta, variant=variant,
                    label_smoothing=eps, chosen_tokens=pairs["nc"], rejected_tokens=pairs["nr"]).losses.mean()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("loss_type", "eps"), [("simpo", 0.0), ("simpo", 0.1), ("sigmoid", 0.1), ("ipo", 0.0)])
def test_reference_free_parity_with_trl_cpo(pairs, loss_type, eps):
    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer", reason="TRL comes with the dev extra")
    beta, gamma = 2.0, 0.5
    me = _stand_in(alpha=0.0, beta=beta, simpo_gamma=gamma, label_smoothing=eps, loss_type=loss_type)
    if loss_type == "simpo":  # CPOTrainer feeds SimPO length-averaged log-probs
        theirs, _, _ = cpo.CPOTrainer.cpo_loss(me, pairs["pc"] / pairs["nc"], pairs["pr"] / pairs["nr"])
        ours = simpo_loss(PairLogps(pairs["pc"], pairs["pr"], pairs["nc"], pairs["nr"]), beta=beta, gamma=gamma,
                          label_smoothing=eps).losses
    else:  # CPO's sigmoid / ipo: DPO with no reference (log-ratios = log-probs), IPO unnormalised
        theirs, _, _ = cpo.CPOTrainer.cpo_loss(me, pairs["pc"], pairs["pr"])
        zero = torch.zeros(16)
        ours = dpo_loss(pairs["pc"], pairs["pr"], zero, zero, beta=beta, variant=loss_type, label_smoothing=eps,
                        normalize=False).losses
    assert ours.tolist() == pytest.approx(theirs.tolist(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("with_margin", [False, True])
def test_bradley_terry_parity_with_trl(pairs, with_margin):
    reward = pytest.importorskip("trl.trainer.reward_trainer", reason="TRL comes with the dev extra")
    chosen, rejected = pairs["pc"] / 10, pairs["pr"] / 10
    margin = pairs["nc"] / 10 if with_margin else None
    inputs = {"attention_mask": torch.ones(32, 4)} | ({"margin": margin} if with_margin else {})
    me = _stand_in(args=SimpleNamespace(center_rewards_coefficient=0.01))
    outputs = SimpleNamespace(logits=torch.cat([chosen, rejected]).unsqueeze(-1))
    theirs = reward.RewardTrainer.compute_loss(me, lambda **_: outputs, inputs)
    ours = bradley_terry_loss(chosen, rejected, margin=margin, center_coef=0.01).losses.mean()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_kto_parity_with_trl(pairs):
    kto_trainer = pytest.importorskip("trl.trainer.kto_trainer", reason="TRL comes with the dev extra")
    labels = torch.arange(16) % 3 != 0
    per_token, mask = _token_logps(pairs["pc"], pairs["nc"])
    kl_per_token, kl_mask = _token_logps(pairs["pr"], pairs["nr"])  # the mismatched (prompt, completion) rows
    ids, kl_ids = torch.zeros_like(mask), torch.ones_like(kl_mask)

    def model(**kwargs):
        rows = kl_per_token if kwargs["input_ids"] is kl_ids else per_token
        zeros = torch.zeros_like(rows)
        return SimpleNamespace(log_probs=rows, entropy=zeros, mean_logits=zeros)

    batch = {"input_ids": ids, "attention_mask": torch.ones_like(mask), "completion_mask": mask, "label": labels,
             "ref_logps": pairs["rc"], "ref_KL_logps": pairs["rr"], "KL_input_ids": kl_ids,
             "KL_attention_mask": torch.ones_like(kl_mask), "KL_completion_mask": kl_mask}
    me = _stand_in(calculate_KL=True, precompute_ref_logps=True, aux_loss_enabled=False, loss_type="kto", beta=0.1,
                   desirable_weight=1.0, undesirable_weight=1.33)
    me._compute_kl_logps = lambda m, b: kto_trainer.KTOTrainer._compute_kl_logps(me, m, b)  # TRL's own, bound
    theirs = kto_trainer.KTOTrainer._compute_loss(me, model, batch, return_outputs=False)
    z0 = kto_reference_point(pairs["pr"], pairs["rr"])
    ours = kto_loss(pairs["pc"], pairs["rc"], labels, z0, beta=0.1, desirable_weight=1.0, undesirable_weight=1.33)
    assert ours.losses.mean().item() == pytest.approx(theirs.item(), rel=1e-5)
