import math

import torch

from tether.losses.sft import sft_loss


def test_sft_loss_hand_worked():
    # Docstring example: -(ln 0.5 + ln 0.25) = ln 2 + ln 4 = 2.0794 over 2 tokens.
    logps = torch.tensor([[0.0, math.log(0.5), math.log(0.25)]])
    mask = torch.tensor([[False, True, True]])
    out = sft_loss(logps, mask)
    assert math.isclose(float(out.loss_sum), math.log(2) + math.log(4), rel_tol=1e-6)
    assert int(out.num_tokens) == 2


def test_sft_loss_ignores_masked_positions_entirely():
    logps = torch.tensor([[-100.0, -1.0], [-2.0, -100.0]])
    mask = torch.tensor([[False, True], [True, False]])
    assert float(sft_loss(logps, mask).loss_sum) == 3.0
