"""The encoder f: pixel-space images in, feature map out; pooling lives outside the backbone.

Inputs stay in [0, 1] pixel space and are normalised inside the encoder, so that analyses and
adversarial budgets are expressed in pixels whatever the normalisation.

Two halves, like timm's ``forward_features`` / ``forward_head``:

* ``encoder(x)`` -> the feature map (B, C, h, w): each position is a *local representation*;
* ``encoder.pool(fmap)`` -> the *global representation* (B, D): the backbone's own global (the
  spatial mean for this package's backbones; for a model spec its family's rule, e.g. a ViT's
  class token, ConvNeXt's norm after the mean), followed by the optional MLP after pooling
  (``backbone.pool_mlp``; identity when off);
* ``encoder.encode(x)`` -> both in one pass (what training uses: a class token is a property of
  the pass, not of the map).

Code that accepts any module returning a feature map pools with :func:`pool_features`, which uses
the module's own ``pool`` when it has one and the plain spatial mean otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .config import Config


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

    ``backbone`` maps normalised images to the map: one of this package's backbones, or a
    :class:`~cossl_train.backbones.external.FeatureMap` of any network (which also gives that
    network's own global, ``forward_global``). ``head`` is applied to the backbone's global by
    :meth:`pool` and :meth:`encode` (an ``nn.Identity`` unless a pool MLP is given).
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float],
                 head: nn.Module | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = head if head is not None else nn.Identity()
        self.num_features: int = backbone.num_features

    def _own_global(self) -> bool:
        return hasattr(self.backbone, "forward_global")

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(self.normalize(x))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> ((B, C, h, w) map, (B, D) global representation), in one pass."""
        z = self.normalize(x)
        if self._own_global():
            fmap, g = self.backbone.forward_global(z)
            return fmap, self.head(g)
        fmap = self.backbone(z)
        return fmap, self.head(global_pool(fmap))

    def pool(self, fmap: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, D): the global representation h (the backbone's own global -- the
        spatial mean for this package's backbones --, then the head)."""
        return self.head(self.backbone.pool(fmap) if self._own_global() else global_pool(fmap))

    @property
    def poolable_subsets(self) -> bool:
        """True when the global is a function of the spatial mean (any subset of positions re-pools)."""
        return bool(getattr(self.backbone, "poolable_subsets", True))

    @property
    def pooling_kind(self) -> str:
        """``mean`` (head(spatial mean)), ``map`` (another function of the map) or ``pass`` (taken in
        the forward pass, e.g. a class token: ``pool`` then takes only the latest forward's map)."""
        return str(getattr(self.backbone, "pooling_kind", "mean"))

    @property
    def mean_head(self) -> nn.Module:
        """What the global applies after the spatial mean: the backbone's step (ConvNeXt's norm)
        then the pool MLP. Only meaningful when :attr:`poolable_subsets`."""
        inner = getattr(self.backbone, "head", None) if self._own_global() else None
        if isinstance(inner, nn.Module) and not isinstance(inner, nn.Identity):
            return inner if isinstance(self.head, nn.Identity) else nn.Sequential(inner, self.head)
        return self.head

    @property
    def global_text(self) -> str:
        """The global representation in words."""
        base = getattr(self.backbone, "global_text", "spatial mean of the map")
        return base if isinstance(self.head, nn.Identity) else f"{base}, then the pool MLP"


def global_pool(fmap: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C): the spatial mean of the feature map."""
    return fmap.mean(dim=(2, 3))


def pool_features(model: nn.Module, fmap: Tensor) -> Tensor:
    """The global representation of ``fmap``: ``model.pool(fmap)`` for an :class:`Encoder`, the
    spatial mean for any other module returning a feature map."""
    pool = getattr(model, "pool", None)
    return pool(fmap) if callable(pool) else global_pool(fmap)


def pool_head(model: nn.Module) -> nn.Module:
    """What ``model`` applies after the spatial mean (its pool MLP, a model's own norm, or the
    identity): for code that averages a subset of positions itself (patch dropping), which must
    first check ``model.poolable_subsets``."""
    head = getattr(model, "mean_head", None)
    if isinstance(head, nn.Module):
        return head
    head = getattr(model, "head", None)
    return head if isinstance(head, nn.Module) and hasattr(model, "pool") else nn.Identity()


def build_encoder(cfg: Config) -> Encoder:
    """The encoder of ``cfg``: the backbone (a registered name with its default stem unless
    ``backbone.small_image`` is set, or a model spec with ``backbone.kwargs``), input
    normalisation, and the MLP after pooling when ``backbone.pool_mlp`` (or the backbone's
    default) says so.

    Raises:
        BackboneError / ConfigError: one line naming ``backbone.name`` when a spec cannot be built,
            gives no feature map, or does not run at the configured resolutions.
    """
    from .augment import local_resolution
    from .backbones import backbone_defaults, build_backbone, list_backbones, spec_backbone
    from .errors import ConfigError

    b = cfg.backbone
    if b.name in list_backbones():
        backbone = build_backbone(b.name, small_image=b.small_image, width=b.width)
        pool_mlp = backbone_defaults(b.name)["pool_mlp"] if b.pool_mlp is None else b.pool_mlp
    else:
        sizes = (cfg.augment.resolution, *((local_resolution(cfg.augment),) if cfg.augment.local_crops else ()))
        backbone = spec_backbone(b.name, b.kwargs, sizes)
        pool_mlp = bool(b.pool_mlp)
        if cfg.method.name.startswith("co_") and backbone.map_channels != backbone.num_features:
            raise ConfigError(f"backbone.name={b.name}: its global representation has {backbone.num_features} "
                              f"features and its map {backbone.map_channels} channels; the CO term compares the two "
                              "through the same heads, so it needs a backbone whose widths agree")
    c = backbone.num_features
    head = PoolMLP(c, b.pool_mlp_hidden or c) if pool_mlp else None
    return Encoder(backbone, cfg.augment.mean, cfg.augment.std, head=head)


def local_features(fmap: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, h*w, C): the local representations, one row per position."""
    return fmap.flatten(2).transpose(1, 2)
