"""The encoder f: pixel-space images in, feature map out; pooling lives outside the backbone.

Inputs stay in [0, 1] pixel space and are normalised inside the encoder, so that analyses and
adversarial budgets are expressed in pixels whatever the normalisation.

Two halves, like timm's ``forward_features`` / ``forward_head``:

* ``encoder(x)`` -> the feature map (B, C, h, w): each position is a *local representation*;
* ``encoder.pool(fmap)`` -> the *global representation* (B, C): the spatial mean, followed by the
  optional MLP after pooling (``backbone.pool_mlp``; identity when off).

Code that accepts any module returning a feature map pools with :func:`pool_features`, which uses
the module's own ``pool`` when it has one and the plain spatial mean otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class PoolMLP(nn.Module):
    """The MLP after average pooling: Linear-BN-ReLU-Linear, (B, C) -> (B, C).

    Its output keeps the feature width C, so probes and projectors read the same width with the
    MLP on or off.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> (B, C, h, w) feature map of local representations.

    ``head`` is applied to the pooled map by :meth:`pool` (an ``nn.Identity`` unless a pool MLP
    is given).
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float],
                 head: nn.Module | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = head if head is not None else nn.Identity()
        self.num_features: int = backbone.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(self.normalize(x))

    def pool(self, fmap: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, C): the global representation h (spatial mean, then the head)."""
        return self.head(global_pool(fmap))


def global_pool(fmap: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C): the spatial mean of the feature map."""
    return fmap.mean(dim=(2, 3))


def pool_features(model: nn.Module, fmap: Tensor) -> Tensor:
    """The global representation of ``fmap``: ``model.pool(fmap)`` for an :class:`Encoder`, the
    spatial mean for any other module returning a feature map."""
    pool = getattr(model, "pool", None)
    return pool(fmap) if callable(pool) else global_pool(fmap)


def pool_head(model: nn.Module) -> nn.Module:
    """What ``model`` applies after the spatial mean (its pool MLP, or the identity): for code
    that averages a subset of positions itself (patch dropping)."""
    head = getattr(model, "head", None)
    return head if isinstance(head, nn.Module) and hasattr(model, "pool") else nn.Identity()


def local_features(fmap: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, h*w, C): the local representations, one row per position."""
    return fmap.flatten(2).transpose(1, 2)
