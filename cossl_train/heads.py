"""Projector, predictor and DINO heads, for global vectors and for every local position.

All heads map (N, in_dim) -> (N, out_dim). Local heads are the same modules applied to the
(B*h*w, C) rows of a feature map (:func:`per_position`), so their BatchNorm normalises over all
positions of all images (never over a (B, hw, C) tensor, where BatchNorm1d would take hw for
channels).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .runtime import at_least_fp32


class MLP(nn.Module):
    """Linear-BN-ReLU-...-Linear with ``layers`` linear layers (BYOL's projector/predictor: 2).

    ``bias=False`` and ``last_bn=True`` give MoCo-v3's heads (a last BatchNorm without affine
    parameters, as SimCLR's projector in that recipe).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, bias: bool = True,
                 last_bn: bool = False) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"an MLP needs at least one layer, got {layers}")
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < layers - 1:
                mods += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        if last_bn:
            mods.append(nn.BatchNorm1d(out_dim, affine=False))
        self.net = nn.Sequential(*mods)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class NormalizedLinear(nn.Module):
    """x -> x @ (g * W / ||W||_rows)^T, DINO's weight-normalised last layer, (N, in_dim) -> (N, out_dim),
    no bias. The row norms g start at 1 and stay there with ``fixed_norm`` (DINO's
    ``norm_last_layer``, its ResNet-50 setting); otherwise they are learnt."""

    def __init__(self, in_dim: int, out_dim: int, fixed_norm: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's init; only directions matter
        if fixed_norm:
            self.register_buffer("norm", torch.ones(out_dim, 1))
        else:
            self.norm = nn.Parameter(torch.ones(out_dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.norm * F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """DINO's projection head: an MLP (GELU; BatchNorm only with ``batch_norm``) to a
    ``bottleneck`` vector, L2-normalised, then a weight-normalised layer to ``out_dim`` logits,
    computed in at least fp32 under autocast. (N, in_dim) -> (N, out_dim)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck: int, out_dim: int, layers: int = 3,
                 norm_last_layer: bool = True, batch_norm: bool = False) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                mods += [nn.BatchNorm1d(dims[i + 1]), nn.GELU()] if batch_norm else [nn.GELU()]
        self.mlp = nn.Sequential(*mods)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = NormalizedLinear(bottleneck, out_dim, fixed_norm=norm_last_layer)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        # The last layer in fp32 even under autocast: its cosine logits are divided by temperatures
        # as low as 0.04, and bf16's spacing near 1 (~0.004) would become ~0.1 logit units.
        z = F.normalize(at_least_fp32(self.mlp(x)), dim=-1)
        with torch.autocast(z.device.type, enabled=False):
            return self.last_layer(z)


def per_position(head: Callable[[Tensor], Tensor], fmap: Tensor) -> Tensor:
    """Apply ``head`` to every local representation: (B, C, h, w) -> (B, h*w, D).

    Rows are in (b, i, j) order. On a channels_last map the (B*h*w, C) view needs no copy.
    """
    b, c = fmap.shape[:2]
    rows = fmap.permute(0, 2, 3, 1).reshape(-1, c)
    out = head(rows)
    return out.view(b, -1, out.shape[-1])


def per_row(head: nn.Module, x: Tensor) -> Tensor:
    """Apply ``head`` to (B, P, D) local embeddings: (B, P, D) -> (B, P, D'), BatchNorm over all B*P rows."""
    b, p, d = x.shape
    out = head(x.reshape(b * p, d))
    return out.view(b, p, -1)
