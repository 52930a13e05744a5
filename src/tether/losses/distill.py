"""Token-level distillation: the KL between a teacher's and a student's next-token distributions.

Context distillation (Askell et al. 2021; Snell et al. 2022) trains a student *without* a context to
match the teacher *with* it. Per completion position, with p the teacher's distribution and q the
student's (both softmax(logits / T)):

- ``forward``: KL(p || q) = sum_v p_v (log p_v - log q_v), mass-covering; what Askell et al. use,
  and the gradient of cross-entropy to the teacher's full distribution;
- ``reverse``: KL(q || p) = sum_v q_v (log q_v - log p_v), mode-seeking (MiniLLM, GKD's on-policy
  variant).

The temperature divides both sets of logits; the result is *not* multiplied by T^2 (Hinton et al.
2015 do, to keep gradient scale across temperatures; at T = 1, the default, the two agree).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Direction = Literal["forward", "reverse"]


def token_kl(student_logits: Tensor, teacher_logits: Tensor, *, direction: Direction = "forward",
             temperature: float = 1.0) -> Tensor:
    """KL per position between teacher and student.  (N, V), (N, V) -> (N,)

    Computed in float32; the teacher side carries no gradient.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    if direction == "forward":
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if direction == "reverse":
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
