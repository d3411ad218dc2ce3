"""DINO's loss (Caron et al. 2021): the student's softmax against the centred, sharpened teacher,
as functions and as the pair loss the CO term reuses.

Shapes: B images, K prototypes (the heads' output size), optionally P positions in between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..runtime import at_least_fp32
from .pair import PairLoss


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


class DINOLoss(PairLoss):
    """DINO's loss per view pair: queries are student logits (..., K), raw targets teacher logits.

    :meth:`targets` centres and sharpens the teacher logits (temperature ``teacher_temp``, warmed
    up linearly from ``teacher_temp_warmup`` over ``teacher_temp_warmup_epochs`` whole epochs, as
    DINO's ``linspace``) and then moves the centre, an EMA (``center_momentum``) of the teacher
    outputs' batch mean over all processes, kept in the ``center`` buffer. The loss averages over
    pairs (``pair_scale`` 1): every crop against the teacher output of every other global crop.

    >>> import torch
    >>> from cossl_train import DINOLoss
    >>> loss = DINOLoss(out_dim=16)
    >>> student, teacher = [torch.randn(4, 16), torch.randn(4, 16)], [torch.randn(4, 16), torch.randn(4, 16)]
    >>> probs = loss.targets(teacher, epoch=0.0)  # centred, sharpened; the centre moves
    >>> loss.global_loss(student, probs).shape, bool(loss.center.abs().sum() > 0)
    (torch.Size([]), True)
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 teacher_temp_warmup: float = 0.04, teacher_temp_warmup_epochs: int = 0,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        for name, value in (("student_temp", student_temp), ("teacher_temp", teacher_temp),
                            ("teacher_temp_warmup", teacher_temp_warmup)):
            if not value > 0:
                raise InputError(f"{name} must be > 0, got {value}")
        self.student_temp = float(student_temp)
        self.teacher_temp_final = float(teacher_temp)
        self.teacher_temp_warmup = float(teacher_temp_warmup)
        self.teacher_temp_warmup_epochs = int(teacher_temp_warmup_epochs)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(out_dim))

    def teacher_temp(self, epoch: float) -> float:
        """DINO's ``np.linspace(warmup, final, warmup_epochs)`` per whole epoch, then ``final``: the
        final value is reached at epoch ``warmup_epochs - 1``."""
        e, n = math.floor(epoch), self.teacher_temp_warmup_epochs
        if e >= n:
            return self.teacher_temp_final
        if n == 1:
            return self.teacher_temp_warmup
        return self.teacher_temp_warmup + (self.teacher_temp_final - self.teacher_temp_warmup) * e / (n - 1)

    def targets(self, raw: Sequence[Tensor], epoch: float) -> list[Tensor]:
        temp = self.teacher_temp(epoch)
        probs = [teacher_probabilities(t, self.center, temp) for t in raw]
        update_center(self.center, torch.cat([t.reshape(-1, t.shape[-1]) for t in raw]), self.center_momentum)
        return probs

    def pair(self, query: Tensor, target: Tensor) -> Tensor:
        return dino_cross_entropy(query, target, self.student_temp)

    def local_to_global(self, local_query: Tensor, target: Tensor) -> Tensor:
        return dino_cross_entropy(local_query, target.unsqueeze(1), self.student_temp)

    def global_to_local(self, query: Tensor, local_target: Tensor) -> Tensor:
        return dino_cross_entropy(query.unsqueeze(1), local_target, self.student_temp)
