"""BYOL's regression loss (Grill et al. 2020)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Mean of 2 - 2 cos(p, z) over all leading dimensions.

    p: (..., D) predictions; z: (..., D) targets, broadcastable against p (for example
    p (B, P, D) against z (B, 1, D) for local predictions and one global target per image).
    The caller detaches targets; this function does not.
    """
    p = F.normalize(p, dim=-1)
    z = F.normalize(z, dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()
