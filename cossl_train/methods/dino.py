"""DINO in its ResNet-50 form (Caron et al. 2021): student = encoder + DINO head (MLP to a
bottleneck, L2 normalisation, weight-normalised layer to K prototypes); teacher = their EMA.
Per pair: cross-entropy between the student's softmax (temperature ``student_temp``) and the
teacher's centred, sharpened softmax (``teacher_temp``, warmed up linearly from
``teacher_temp_warmup`` over ``teacher_temp_warmup_epochs`` whole epochs, as DINO's linspace); the centre is an EMA
(``center_momentum``) of the teacher outputs' batch mean over all processes. The loss averages over
pairs (``pair_scale`` 1), every crop against the teacher output of every other global crop. The
last layer's gradient is dropped during the first ``freeze_last_layer_epochs`` epochs. As DINO's
multi-crop wrapper, the crops of one resolution go through the encoder together and all crops
through the head together (``joint_views``), so BatchNorm sees the 2B global crops at once.

The CO term's local heads are DINO heads of width ``co.proj_hidden`` at every position; the local
teacher outputs (global-to-local direction) are centred with a centre of their own."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..config import Config, DINOConfig
from ..encoder import Encoder
from ..heads import DINOHead
from ..losses import dino_cross_entropy, teacher_probabilities
from ..losses.dino import update_center
from .base import PairLoss, SSLMethod


class DINOLoss(PairLoss):
    """Queries are student logits (..., K); targets are teacher probabilities (``targets``)."""

    def __init__(self, out_dim: int, cfg: DINOConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("center", torch.zeros(out_dim))

    def teacher_temp(self, epoch: float) -> float:
        """DINO's ``np.linspace(warmup, final, warmup_epochs)`` per whole epoch, then ``final``: the
        final value is reached at epoch ``warmup_epochs - 1``."""
        c = self.cfg
        e, n = math.floor(epoch), c.teacher_temp_warmup_epochs
        if e >= n:
            return c.teacher_temp
        if n == 1:
            return c.teacher_temp_warmup
        return c.teacher_temp_warmup + (c.teacher_temp - c.teacher_temp_warmup) * e / (n - 1)

    def targets(self, raw: Sequence[Tensor], epoch: float) -> list[Tensor]:
        temp = self.teacher_temp(epoch)
        probs = [teacher_probabilities(t, self.center, temp) for t in raw]
        update_center(self.center, torch.cat([t.reshape(-1, t.shape[-1]) for t in raw]), self.cfg.center_momentum)
        return probs

    def pair(self, query: Tensor, target: Tensor) -> Tensor:
        return dino_cross_entropy(query, target, self.cfg.student_temp)

    def local_to_global(self, local_query: Tensor, target: Tensor) -> Tensor:
        return dino_cross_entropy(local_query, target.unsqueeze(1), self.cfg.student_temp)

    def global_to_local(self, query: Tensor, local_target: Tensor) -> Tensor:
        return dino_cross_entropy(query.unsqueeze(1), local_target, self.cfg.student_temp)


def _last_layers(method: SSLMethod) -> list[nn.Parameter]:
    """The student's (and the local student head's) weight-normalised last layer."""
    heads = [method.projector, getattr(method.co, "local_projector", None)]
    return [p for h in heads if isinstance(h, DINOHead) for p in h.last_layer.parameters()]


def build(cfg: Config, encoder: Encoder) -> SSLMethod:
    h, d, c = cfg.head, cfg.method.dino, encoder.num_features

    def local_heads() -> tuple[DINOHead, None]:
        return DINOHead(c, cfg.co.proj_hidden, h.proj_dim, d.out_dim, d.head_layers, d.norm_last_layer, d.head_bn), None

    head = DINOHead(c, h.proj_hidden, h.proj_dim, d.out_dim, d.head_layers, d.norm_last_layer, d.head_bn)
    return SSLMethod(encoder, head, None, DINOLoss(d.out_dim, d), momentum=True, make_local_heads=local_heads,
                     frozen_epochs=d.freeze_last_layer_epochs, frozen=_last_layers, joint_views=True)
