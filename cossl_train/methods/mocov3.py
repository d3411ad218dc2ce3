"""MoCo-v3 in its ResNet-50 form (Chen, Xie, He 2021): online encoder, projector (2 layers, no
biases, a last BatchNorm without affine) and predictor (2 layers); momentum encoder and
projector. Per pair: InfoNCE of the query against the momentum keys of the other view, gathered
from all processes (the other images are the negatives), times 2T; the loss sums the two view
orders (``pair_scale`` 2). Temperature ``method.mocov3.temperature`` (1.0 for ResNet-50)."""

from __future__ import annotations

from torch import Tensor

from .. import distributed as dist_utils
from ..config import Config
from ..encoder import Encoder
from ..heads import MLP
from ..losses import global_to_local_infonce, infonce_loss, local_to_global_infonce
from .base import PairLoss, SSLMethod


class MoCoV3Loss(PairLoss):
    """InfoNCE x 2T; keys (momentum outputs) are detached and gathered across processes."""

    pair_scale = 2.0

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def pair(self, query: Tensor, target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(target.detach())
        return 2 * self.temperature * infonce_loss(query, keys, self.temperature, offset)

    def local_to_global(self, local_query: Tensor, target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(target.detach())
        return 2 * self.temperature * local_to_global_infonce(local_query, keys, self.temperature, offset)

    def global_to_local(self, query: Tensor, local_target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(local_target.detach())
        return 2 * self.temperature * global_to_local_infonce(query, keys, self.temperature, offset)


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
