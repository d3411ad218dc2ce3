"""Projector, predictor and DINO heads, for global vectors and for every local position.

All heads map (N, in_dim) -> (N, out_dim). Local heads are the same modules applied to the
(B*h*w, C) rows of a feature map (:class:`PerPosition`, :func:`per_position`), so their BatchNorm
normalises over all positions of all images (never over a (B, hw, C) tensor, where BatchNorm1d
would take hw for channels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError
from .runtime import at_least_fp32


class MLP(nn.Module):
    """Linear-BN-ReLU-...-Linear with ``layers`` linear layers (BYOL's projector/predictor: 2).

    ``bias=False`` and ``last_bn=True`` give MoCo-v3's heads (a last BatchNorm without affine
    parameters, as SimCLR's projector in that recipe). (N, in_dim) -> (N, out_dim).

    >>> import torch
    >>> from cossl_train import MLP
    >>> projector = MLP(512, 4096, 256)  # BYOL's projector on a ResNet-18's 512 features
    >>> projector(torch.randn(8, 512)).shape
    torch.Size([8, 256])
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
    computed in at least fp32 under autocast. (N, in_dim) -> (N, out_dim).

    >>> import torch
    >>> from cossl_train import DINOHead
    >>> head = DINOHead(512, 2048, 256, out_dim=4096)
    >>> head(torch.randn(8, 512)).shape
    torch.Size([8, 4096])
    """

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


def _check_map(fmap: Tensor, what: str = "fmap") -> None:
    if not isinstance(fmap, Tensor) or fmap.dim() != 4:
        shape = tuple(fmap.shape) if isinstance(fmap, Tensor) else type(fmap).__name__
        hint = (" (a pooled vector: give the map before pooling, e.g. a backbone's forward_features)"
                if isinstance(fmap, Tensor) and fmap.dim() == 2 else "")
        raise InputError(f"{what} has shape {shape}: expected a feature map (B, C, h, w){hint}")
    if fmap.shape[-1] * fmap.shape[-2] == 0:
        raise InputError(f"{what} has shape {tuple(fmap.shape)}: a feature map with no spatial positions")


@contextmanager
def batch_statistics_only(modules: Sequence[nn.Module]) -> Iterator[None]:
    """BatchNorm inside ``modules`` normalises with the statistics of the batch it is given and
    leaves its running statistics (and batch count) untouched, in train and in eval mode.

    This is the rule for a head trained on global vectors that is applied to local rows: its
    running statistics belong to the global rows, and the local rows never had any of their own.
    """
    bns = [m for mod in modules for m in mod.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(bn.training, bn.track_running_stats) for bn in bns]
    for bn in bns:
        bn.track_running_stats = False
        bn.train()  # eval-mode BatchNorm would read the global rows' running statistics
    try:
        yield
    finally:
        for bn, (training, track) in zip(bns, saved, strict=True):
            bn.track_running_stats = track
            bn.train(training)


def grid_pool(fmap: Tensor, grid: int) -> Tensor:
    """Average-pool a feature map to ``grid`` x ``grid`` positions (0: the map as it is).

    >>> import torch
    >>> from cossl_train import grid_pool
    >>> grid_pool(torch.ones(2, 8, 6, 6), 2).shape
    torch.Size([2, 8, 2, 2])
    """
    if grid < 0:
        raise InputError(f"grid={grid} must be >= 0 (0 = the map as it is)")
    if grid and fmap.shape[-2:] != (grid, grid):
        return F.adaptive_avg_pool2d(fmap, grid)
    return fmap


def per_position(head: Callable[[Tensor], Tensor], fmap: Tensor, grid: int = 0,
                 update_running_stats: bool = True) -> Tensor:
    """Apply ``head`` to every local representation: (B, C, h, w) -> (B, h*w, D).

    The map is first average-pooled to ``grid`` x ``grid`` when ``grid`` > 0. Rows are in (b, i, j)
    order; ``head`` sees them as one (B*h*w, C) batch, so its BatchNorm normalises over all
    positions of all images. With ``update_running_stats=False`` (``head`` must then be a module)
    the BatchNorm layers use the rows' own batch statistics and leave their running statistics
    alone (:func:`batch_statistics_only`). On a channels_last map the (B*h*w, C) view needs no copy.
    """
    _check_map(fmap)
    fmap = grid_pool(fmap, grid)
    b, c = fmap.shape[:2]
    rows = fmap.permute(0, 2, 3, 1).reshape(-1, c)
    if update_running_stats:
        out = head(rows)
    else:
        if not isinstance(head, nn.Module):
            raise TypeError("update_running_stats=False needs the head as an nn.Module (its BatchNorm layers)")
        with batch_statistics_only([head]):
            out = head(rows)
    return out.view(b, -1, out.shape[-1])


class PerPosition(nn.Module):
    """A projection or prediction head applied at every position of a feature map.

    (B, C, h, w) -> (B, h*w, D): the local representations are the rows of one (B*h*w, C) batch
    (never a (B, h*w, C) tensor, where BatchNorm1d would take the positions for channels), so
    BatchNorm normalises over all positions of all images. ``grid`` > 0 average-pools the map to
    ``grid`` x ``grid`` first (the n^2 local representations of CO-SSL). ``update_running_stats=False``
    is for a head trained on global vectors and applied to local rows (shared heads): its BatchNorm
    then normalises with the local rows' own batch statistics, in train and eval mode, and its
    running statistics stay those of the global rows.

    Args:
        head: any module mapping (N, C) -> (N, D), e.g. an :class:`MLP` (N = B*h*w).
        grid: pool the map to ``grid`` x ``grid`` before the head (0: as it is).
        update_running_stats: whether the head's BatchNorm keeps running statistics of these rows.

    >>> import torch
    >>> from cossl_train import MLP, PerPosition
    >>> local_projector = PerPosition(MLP(64, 256, 32))
    >>> local_projector(torch.randn(8, 64, 4, 4)).shape  # 8 images, 16 positions, 32 dimensions
    torch.Size([8, 16, 32])
    """

    def __init__(self, head: nn.Module, grid: int = 0, update_running_stats: bool = True) -> None:
        super().__init__()
        if grid < 0:
            raise InputError(f"grid={grid} must be >= 0 (0 = the map as it is)")
        self.head = head
        self.grid = int(grid)
        self.update_running_stats = update_running_stats

    def forward(self, fmap: Tensor) -> Tensor:
        return per_position(self.head, fmap, self.grid, self.update_running_stats)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, update_running_stats={self.update_running_stats}"


def per_row(head: nn.Module, x: Tensor) -> Tensor:
    """Apply ``head`` to (B, P, D) local embeddings: (B, P, D) -> (B, P, D'), BatchNorm over all B*P rows."""
    b, p, d = x.shape
    out = head(x.reshape(b * p, d))
    return out.view(b, p, -1)
