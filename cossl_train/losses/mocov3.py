"""MoCo-v3's loss (Chen, Xie, He 2021) as a pair loss: InfoNCE of each query against the momentum
keys of the other view, gathered from all processes, times 2T."""

from __future__ import annotations

from torch import Tensor

from .. import distributed as dist_utils
from ..errors import InputError
from .infonce import global_to_local_infonce, infonce_loss, local_to_global_infonce
from .pair import PairLoss


class MoCoV3Loss(PairLoss):
    """InfoNCE x 2T per view pair; the loss sums the two view orders (``pair_scale`` 2).

    Queries are the online predictor's outputs (B, D), targets (keys) the momentum projector's
    (B, D), detached here; the other images' keys are the negatives. Local queries and targets
    are (B, P, D).

    >>> import math, torch
    >>> from cossl_train import MoCoV3Loss
    >>> loss = MoCoV3Loss(temperature=1.0)
    >>> q = torch.eye(4)  # 4 orthogonal queries whose keys are themselves: cos 1 to the positive, 0 else
    >>> round(float(loss.pair(q, q)), 4) == round(2 * -math.log(math.e / (math.e + 3)), 4)
    True
    """

    pair_scale = 2.0

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def pair(self, query: Tensor, target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(target.detach())
        return 2 * self.temperature * infonce_loss(query, keys, self.temperature, offset)

    def local_to_global(self, local_query: Tensor, target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(target.detach())
        return 2 * self.temperature * local_to_global_infonce(local_query, keys, self.temperature, offset)

    def global_to_local(self, query: Tensor, local_target: Tensor) -> Tensor:
        keys, offset = dist_utils.gather_rows(local_target.detach())
        return 2 * self.temperature * global_to_local_infonce(query, keys, self.temperature, offset)
