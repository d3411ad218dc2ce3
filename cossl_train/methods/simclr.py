"""SimCLR (Chen et al. 2020): encoder and projector, NT-Xent over both views with the negatives
gathered from all processes (cross-entropy on logits). No momentum branch: the targets are the
online projections, with their gradient. The CO term's local InfoNCE uses the other images'
global embeddings as negatives. Temperature ``method.simclr.temperature``. Two views only."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .. import distributed as dist_utils
from ..config import Config
from ..encoder import Encoder
from ..heads import MLP
from ..losses import global_to_local_infonce, local_to_global_infonce, nt_xent_loss
from .base import PairLoss, SSLMethod


class SimCLRLoss(PairLoss):
    multi_crop = False

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def global_loss(self, queries: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        (k1, offset), (k2, _) = dist_utils.gather_rows(queries[0]), dist_utils.gather_rows(queries[1])
        return nt_xent_loss(queries[0], queries[1], k1, k2, self.temperature, offset)

    def local_to_global(self, local_query: Tensor, target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(target)
        return local_to_global_infonce(local_query, keys, self.temperature, offset)

    def global_to_local(self, query: Tensor, local_target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(local_target)
        return global_to_local_infonce(query, keys, self.temperature, offset)


def build(cfg: Config, encoder: Encoder) -> SSLMethod:
    h, co, c = cfg.head, cfg.co, encoder.num_features

    def local_heads() -> tuple[MLP, None]:
        return MLP(c, co.proj_hidden, h.proj_dim), None

    return SSLMethod(encoder, MLP(c, h.proj_hidden, h.proj_dim), None, SimCLRLoss(cfg.method.simclr.temperature),
                     momentum=False, make_local_heads=local_heads)
