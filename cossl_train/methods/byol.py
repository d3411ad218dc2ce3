"""BYOL (Grill et al. 2020): online encoder, projector g and predictor q; momentum encoder and
projector g_xi. Per pair: 2 - 2 cos(q(g(h_a)), sg[g_xi(h_xi,b)]); the loss sums the two view
orders (``pair_scale`` 2), as BYOL's published loss, for which its LARS rate and weight decay were
tuned."""

from __future__ import annotations

from torch import Tensor

from ..config import Config
from ..encoder import Encoder
from ..heads import MLP
from ..losses import byol_loss
from .base import PairLoss, SSLMethod


class BYOLLoss(PairLoss):
    """Negative cosine: targets (B, D) or local targets (B, P, D) are detached momentum outputs."""

    pair_scale = 2.0

    def pair(self, query: Tensor, target: Tensor) -> Tensor:
        return byol_loss(query, target.detach())

    def local_to_global(self, local_query: Tensor, target: Tensor) -> Tensor:
        return byol_loss(local_query, target.detach().unsqueeze(1))

    def global_to_local(self, query: Tensor, local_target: Tensor) -> Tensor:
        return byol_loss(query.unsqueeze(1), local_target.detach())


def build(cfg: Config, encoder: Encoder) -> SSLMethod:
    h, co, c = cfg.head, cfg.co, encoder.num_features
    projector = MLP(c, h.proj_hidden, h.proj_dim)
    predictor = MLP(h.proj_dim, h.pred_hidden, h.proj_dim)

    def local_heads() -> tuple[MLP, MLP]:
        return MLP(c, co.proj_hidden, h.proj_dim), MLP(h.proj_dim, co.pred_hidden, h.proj_dim)

    return SSLMethod(encoder, projector, predictor, BYOLLoss(), momentum=True, make_local_heads=local_heads)
