"""SimCLR's loss (Chen et al. 2020) as a pair loss: NT-Xent over the two views, and the InfoNCE
forms the CO term uses for local embeddings. Negatives are gathered from all processes."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .. import distributed as dist_utils
from ..errors import InputError
from .infonce import global_to_local_infonce, local_to_global_infonce, nt_xent_loss
from .pair import PairLoss


class SimCLRLoss(PairLoss):
    """NT-Xent (cross-entropy on logits) between the projections of the two views.

    SimCLR has no target branch: its targets are the online projections themselves, with their
    gradient (``needs_targets = False``). The local forms: each local embedding (B, P, D) of one
    view queries the other view's global embeddings, its own image's being the positive and the
    other images' (of every process) the negatives; and the reverse, position by position.
    Two views only.

    >>> import math, torch
    >>> from cossl_train import SimCLRLoss
    >>> loss = SimCLRLoss(temperature=0.5)
    >>> z = torch.nn.functional.one_hot(torch.arange(4), 8).float()  # 4 orthogonal embeddings
    >>> l = loss.global_loss([z, z], [z, z])  # each positive at cos 1, 6 negatives at cos 0
    >>> round(float(l), 4) == round(-math.log(math.exp(2) / (math.exp(2) + 6)), 4)
    True
    """

    multi_crop = False
    needs_targets = False

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if not temperature > 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def global_loss(self, queries: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        if len(queries) != 2:
            raise InputError(f"SimCLR's loss takes exactly two views, got {len(queries)}")
        (k1, offset), (k2, _) = dist_utils.gather_rows(queries[0]), dist_utils.gather_rows(queries[1])
        return nt_xent_loss(queries[0], queries[1], k1, k2, self.temperature, offset)

    def local_to_global(self, local_query: Tensor, target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(target)
        return local_to_global_infonce(local_query, keys, self.temperature, offset)

    def global_to_local(self, query: Tensor, local_target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(local_target)
        return global_to_local_infonce(query, keys, self.temperature, offset)
