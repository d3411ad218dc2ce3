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

The loss is :class:`~cossl_train.losses.DINOLoss`. The CO term's local heads are DINO heads of
width ``co.proj_hidden`` at every position; the local teacher outputs (global-to-local direction)
are centred with a centre of their own (the criterion's ``local_base``)."""

from __future__ import annotations

from torch import nn

from ..config import Config, DINOConfig
from ..encoder import Encoder
from ..heads import DINOHead
from ..losses import DINOLoss
from .base import SSLMethod


def _last_layers(method: SSLMethod) -> list[nn.Parameter]:
    """The student's (and the local student head's) weight-normalised last layer."""
    heads = [method.projector, getattr(method.co, "local_projector", None)]
    return [p for h in heads if isinstance(h, DINOHead) for p in h.last_layer.parameters()]


def dino_loss(d: DINOConfig) -> DINOLoss:
    """The pair loss of ``method.dino.*``."""
    return DINOLoss(d.out_dim, d.student_temp, d.teacher_temp, d.teacher_temp_warmup, d.teacher_temp_warmup_epochs,
                    d.center_momentum)


def build(cfg: Config, encoder: Encoder) -> SSLMethod:
    h, d, c = cfg.head, cfg.method.dino, encoder.num_features

    def local_heads() -> tuple[DINOHead, None]:
        return DINOHead(c, cfg.co.proj_hidden, h.proj_dim, d.out_dim, d.head_layers, d.norm_last_layer, d.head_bn), None

    head = DINOHead(c, h.proj_hidden, h.proj_dim, d.out_dim, d.head_layers, d.norm_last_layer, d.head_bn)
    return SSLMethod(encoder, head, None, dino_loss(d), momentum=True, make_local_heads=local_heads,
                     frozen_epochs=d.freeze_last_layer_epochs, frozen=_last_layers, joint_views=True)
