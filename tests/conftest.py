"""Shared fixtures: tiny backbones and data so the suite stays fast on 2 cores."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

# One thread per process: the tests run tiny models, where thread start-up and spinning cost more
# than they save, and a fixed count keeps float reductions identical across the processes that
# the resume and distributed tests compare.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


class TinyConvNet(nn.Module):
    """(B, 3, H, W) -> (B, C, H/4, W/4): a backbone small enough for exact-equality tests."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.num_features = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def tiny_backbone() -> TinyConvNet:
    torch.manual_seed(0)
    return TinyConvNet()
