"""BYOL's regression loss (Grill et al. 2020): the function and the pair loss the CO term reuses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .pair import PairLoss


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Mean of 2 - 2 cos(p, z) over all leading dimensions.

    p: (..., D) predictions; z: (..., D) targets, broadcastable against p (for example
    p (B, P, D) against z (B, 1, D) for local predictions and one global target per image).
    The caller detaches targets; this function does not.

    >>> import torch
    >>> p = torch.tensor([[1.0, 0.0]]); z = torch.tensor([[0.0, 3.0]])
    >>> float(byol_loss(p, z)), float(byol_loss(p, p))
    (2.0, 0.0)
    """
    p = F.normalize(p, dim=-1)
    z = F.normalize(z, dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()


class BYOLLoss(PairLoss):
    """BYOL's loss per view pair: 2 - 2 cos(query, sg[target]).

    Queries are the online predictor's outputs (B, D), targets the momentum projector's (B, D);
    local queries and targets are (B, P, D), one row per position. Targets are detached here. The
    published loss sums the two view orders (``pair_scale`` 2), for which BYOL's learning rate and
    weight decay were tuned.

    >>> import torch
    >>> from cossl_train.losses import BYOLLoss, byol_loss
    >>> loss = BYOLLoss()
    >>> p, z = torch.randn(4, 8), torch.randn(4, 8)
    >>> bool(torch.isclose(loss.global_loss([p, p], [z, z]), 2 * byol_loss(p, z)))
    True
    """

    pair_scale = 2.0

    def pair(self, query: Tensor, target: Tensor) -> Tensor:
        return byol_loss(query, target.detach())

    def local_to_global(self, local_query: Tensor, target: Tensor) -> Tensor:
        return byol_loss(local_query, target.detach().unsqueeze(1))

    def global_to_local(self, query: Tensor, local_target: Tensor) -> Tensor:
        return byol_loss(query.unsqueeze(1), local_target.detach())
