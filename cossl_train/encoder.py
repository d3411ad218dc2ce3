"""The encoder f: pixel-space images in, feature map out; pooling lives outside.

Inputs stay in [0, 1] pixel space and are normalised inside the encoder, so that analyses and
adversarial budgets are expressed in pixels whatever the normalisation.
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


class Encoder(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> (B, C, h, w) feature map of local representations."""

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.num_features: int = backbone.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(self.normalize(x))


def global_pool(fmap: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C): the global representation h is the spatial mean."""
    return fmap.mean(dim=(2, 3))


def local_features(fmap: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, h*w, C): the local representations, one row per position."""
    return fmap.flatten(2).transpose(1, 2)
