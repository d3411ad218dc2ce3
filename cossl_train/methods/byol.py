"""BYOL (Grill et al. 2020): online encoder, projector g and predictor q; momentum encoder and
projector g_xi. Per pair: 2 - 2 cos(q(g(h_a)), sg[g_xi(h_xi,b)]) (:class:`~cossl_train.losses.BYOLLoss`,
summing the two view orders, as BYOL's published loss, for which its LARS rate and weight decay
were tuned)."""

from __future__ import annotations

from ..config import Config
from ..encoder import Encoder
from ..heads import MLP
from ..losses import BYOLLoss
from .base import SSLMethod


def build(cfg: Config, encoder: Encoder) -> SSLMethod:
    h, co, c = cfg.head, cfg.co, encoder.num_features
    projector = MLP(c, h.proj_hidden, h.proj_dim)
    predictor = MLP(h.proj_dim, h.pred_hidden, h.proj_dim)

    def local_heads() -> tuple[MLP, MLP]:
        return MLP(c, co.proj_hidden, h.proj_dim), MLP(h.proj_dim, co.pred_hidden, h.proj_dim)

    return SSLMethod(encoder, projector, predictor, BYOLLoss(), momentum=True, make_local_heads=local_heads)
