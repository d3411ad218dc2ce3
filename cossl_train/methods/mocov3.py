"""MoCo-v3 in its ResNet-50 form (Chen, Xie, He 2021): online encoder, projector (2 layers, no
biases, a last BatchNorm without affine) and predictor (2 layers); momentum encoder and
projector. Per pair: InfoNCE of the query against the momentum keys of the other view, gathered
from all processes (the other images are the negatives), times 2T; the loss sums the two view
orders (:class:`~cossl_train.losses.MoCoV3Loss`). Temperature ``method.mocov3.temperature`` (1.0
for ResNet-50)."""

from __future__ import annotations

from ..config import Config
from ..encoder import Encoder
from ..heads import MLP
from ..losses import MoCoV3Loss
from .base import SSLMethod


def _projector(c: int, hidden: int, dim: int) -> MLP:
    return MLP(c, hidden, dim, bias=False, last_bn=True)


def _predictor(dim: int, hidden: int) -> MLP:
    return MLP(dim, hidden, dim, bias=False)


def build(cfg: Config, encoder: Encoder) -> SSLMethod:
    h, co, c = cfg.head, cfg.co, encoder.num_features

    def local_heads() -> tuple[MLP, MLP]:
        return _projector(c, co.proj_hidden, h.proj_dim), _predictor(h.proj_dim, co.pred_hidden)

    return SSLMethod(encoder, _projector(c, h.proj_hidden, h.proj_dim), _predictor(h.proj_dim, h.pred_hidden),
                     MoCoV3Loss(cfg.method.mocov3.temperature), momentum=True, make_local_heads=local_heads)
