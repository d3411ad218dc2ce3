"""SimCLR (Chen et al. 2020): encoder and projector, NT-Xent over both views with the negatives
gathered from all processes (:class:`~cossl_train.losses.SimCLRLoss`). No momentum branch: the
targets are the online projections, with their gradient. The CO term's local InfoNCE uses the other
images' global embeddings as negatives. Temperature ``method.simclr.temperature``. Two views only."""

from __future__ import annotations

from ..config import Config
from ..encoder import Encoder
from ..heads import MLP
from ..losses import SimCLRLoss
from .base import SSLMethod


def build(cfg: Config, encoder: Encoder) -> SSLMethod:
    h, co, c = cfg.head, cfg.co, encoder.num_features

    def local_heads() -> tuple[MLP, None]:
        return MLP(c, co.proj_hidden, h.proj_dim), None

    return SSLMethod(encoder, MLP(c, h.proj_hidden, h.proj_dim), None, SimCLRLoss(cfg.method.simclr.temperature),
                     momentum=False, make_local_heads=local_heads)
