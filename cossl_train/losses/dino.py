"""DINO's loss (Caron et al. 2021): the student's softmax against the centred, sharpened teacher.

Shapes: B images, K prototypes (the heads' output size), optionally P positions in between.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..runtime import at_least_fp32


def teacher_probabilities(teacher_logits: Tensor, center: Tensor, temperature: float) -> Tensor:
    """softmax((t - c) / tau_t) over the last dimension: the teacher's centred, sharpened output.

    teacher_logits: (..., K); center: (K,) running mean of teacher outputs. No gradient flows
    (the teacher is a target): the result is detached. Computed in at least fp32 whatever the input dtype.
    """
    return F.softmax((at_least_fp32(teacher_logits.detach()) - center) / temperature, dim=-1)


def dino_cross_entropy(student_logits: Tensor, teacher_probs: Tensor, student_temperature: float) -> Tensor:
    """Mean over all leading dimensions of - sum_k t_k log softmax(s / tau_s)_k.

    student_logits: (..., K); teacher_probs: (..., K) broadcastable against it (e.g. (B, P, K)
    local student outputs against (B, 1, K) global teacher probabilities). Computed in at least fp32.
    """
    log_p = F.log_softmax(at_least_fp32(student_logits) / student_temperature, dim=-1)
    return -(at_least_fp32(teacher_probs) * log_p).sum(dim=-1).mean()


@torch.no_grad()
def update_center(center: Tensor, teacher_logits: Tensor, momentum: float) -> None:
    """center <- m * center + (1 - m) * mean of ``teacher_logits`` (..., K) over all but the last
    dimension, averaged over processes (the caller's batch mean is all-reduced here)."""
    from ..distributed import all_reduce_mean

    batch_mean = all_reduce_mean(teacher_logits.detach().reshape(-1, teacher_logits.shape[-1]).mean(dim=0))
    center.mul_(momentum).add_(batch_mean.to(center.dtype), alpha=1 - momentum)
