"""Momentum (EMA) targets and BYOL's cosine schedule of the EMA rate."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_ema_rate(step: int, total_steps: int, base: float) -> float:
    """BYOL: tau = 1 - (1 - base) * (cos(pi * step / total) + 1) / 2, from base up to 1."""
    if total_steps <= 0:
        return base
    progress = min(step / total_steps, 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update_(pairs: list[tuple[nn.Module, nn.Module]], tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, for every (online, target) module pair.

    One fused ``_foreach_lerp_`` over all parameters: a per-parameter Python loop is a known
    hot spot of BYOL implementations with many parameter tensors.
    """
    online, target = [], []
    for o, t in pairs:
        online.extend(p.detach() for p in o.parameters())
        target.extend(t.parameters())
    if len(online) != len(target):
        raise RuntimeError("online and target modules have different parameter lists")
    if target:
        torch._foreach_lerp_(target, online, 1.0 - tau)


def make_target(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` to be updated only by EMA."""
    import copy

    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target
