"""Any network as an encoder of the analysis layer: [0, 1] images in, a map of local representations out.

:class:`ExternalEncoder` honours the contract of ``cossl_train.encoder.Encoder``: ``forward(x)``
maps (B, 3, H, W) pixels in [0, 1] to a (B, C, h, w) feature map, ``pool(fmap)`` gives the global
representation (B, D), ``head`` is what ``pool`` applies after the spatial mean, ``num_features``
is the width a linear probe reads. Normalisation happens inside (images and adversarial budgets
stay in pixels).

Where the map and the global come from is the family rule of
:func:`cossl_train.backbones.external.feature_map` (docs/analysis.md, "Your own model"): the map
is what the model pools globally (a transformer's patch tokens on the patch grid), the global is
what the model feeds its final linear classifier. This module adds the pixel normalisation, the
evaluation resolution (and probing other sizes), the descriptions for reports, and where the
weights came from (:attr:`ExternalEncoder.provenance`).

``global_pool``: None (the model's own), ``"mean"`` (spatial mean, then the step the model
applies after pooling) or ``"token"`` (a transformer's class token). A global that is head(mean)
can be re-pooled from any subset of positions (``poolable_subsets``); one that needs the class
token of the forward pass cannot, and ``pool(fmap)`` then accepts only the map of the encoder's
latest forward call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from cossl_analysis.analyses._common import model_device
from cossl_analysis.errors import AnalysisError
from cossl_train.backbones.external import FeatureMap, feature_map, rule_for
from cossl_train.backbones.external.featuremap import check_layer
from cossl_train.encoder import Encoder, Normalize
from cossl_train.errors import BackboneError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ExternalEncoder", "GlobalPool", "analysis_errors", "from_module"]

log = logging.getLogger("cossl_analysis")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

GlobalPool = Literal["token", "mean"]


@contextlib.contextmanager
def analysis_errors() -> Iterator[None]:
    """The training core's one-line backbone errors as the analysis layer's own error type."""
    try:
        yield
    except BackboneError as err:
        raise AnalysisError(str(err)) from None


class ExternalEncoder(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> (B, C, h, w) map of local representations (module docstring).

    Built by :func:`from_module` or ``load_external``; not meant to be constructed directly.

    Attributes:
        features: the :class:`~cossl_train.backbones.external.FeatureMap` of the network.
        net: the network run on the normalised images (the model itself; module names such as
            ``net.layer3`` are its own).
        normalize: ``(x - mean) / std``, per channel.
        head: what ``pool`` applies after the spatial mean (``nn.Identity()`` for a plain mean).
        num_features: width D of the global representation (what a probe reads).
        map_channels: channels C of the map.
        resolution: default evaluation side in pixels (the model's own input size).
        stride: pixels per map position at ``resolution`` (resolution / map side).
        global_pool: the global's short name (``mean``, ``token``, ``max``, ...); settable.
        poolable_subsets: whether the global is head(mean) over positions, so any subset re-pools.
        layer: the submodule the map comes from, or None for the family rule.
        source: where the model comes from (a spec such as ``timm:resnet50@w.pth``, or a class name).
        map_description / global_description / description: the above in words, for figures.
        mean / std: the normalisation.
        weights: the weights file loaded, if any; provenance: where the weights came from.
    """

    def __init__(self, features: FeatureMap, mean: Sequence[float], std: Sequence[float], source: str) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        # The network is registered once, as ``net``: module names (``net.layer3``) and state-dict
        # keys are the network's own; the feature map runs that same object.
        self.net = features.net
        self.__dict__["features"] = features
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.source = source
        self.weights: Path | None = None
        self.provenance: dict[str, Any] = {"source": source, "weights": "as given (a module in memory)"}
        self.resolution = features.input_size
        self._set_grid(features.map_size)
        log.info("%s", self.description)

    # -- the contract --------------------------------------------------------------------------
    @property
    def head(self) -> nn.Module:
        return self.features.head

    @property
    def layer(self) -> str | None:
        return self.features.layer

    @property
    def num_features(self) -> int:
        return self.features.num_features

    @property
    def map_channels(self) -> int:
        return self.features.map_channels

    @property
    def global_pool(self) -> str:
        """The global's short name; set ``"token"``, ``"mean"`` or None (the model's own)."""
        return self.features.global_pool

    @global_pool.setter
    def global_pool(self, value: str | None) -> None:
        with analysis_errors():
            self.features.global_pool = value

    @property
    def poolable_subsets(self) -> bool:
        """True when ``pool`` is head(mean over positions), so any subset can be re-pooled."""
        return self.features.poolable_subsets

    @property
    def pooling_kind(self) -> str:
        """``mean``, ``map`` or ``pass`` (see ``FeatureMap.pooling_kind``)."""
        return self.features.pooling_kind

    @property
    def map_description(self) -> str:
        return self.features.map_text

    @property
    def global_description(self) -> str:
        return self.features.global_text

    @property
    def description(self) -> str:
        return (f"{self.source}: local = {self.map_description}, {self.map_channels} channels, {self._grid_text}; "
                f"global = {self.global_description}")

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, C, h, w) map of local representations."""
        return self.features(self.normalize(x))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) pixels in [0, 1] -> ((B, C, h, w) map, (B, D) global), one pass."""
        return self.features.forward_global(self.normalize(x))

    def pool(self, fmap: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, D): the global representation of a map (a class token: only of the
        map of the latest forward call)."""
        with analysis_errors():
            return self.features.pool(fmap)

    def embed(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, D) global representations."""
        return self.encode(x)[1]

    def set_resolution(self, resolution: int) -> None:
        """Evaluate at ``resolution`` px from now on (``resolution``, ``stride`` and the description follow);
        one-line ``AnalysisError`` when the model does not run at that size."""
        size = self.map_size(resolution)
        self.resolution = int(resolution)
        self._set_grid(size)

    def _set_grid(self, size: tuple[int, int]) -> None:
        h, w = size
        self.stride = self.resolution / max(1, min(h, w))
        self._grid_text = f"{h}x{w} at {self.resolution} px"

    def map_size(self, resolution: int | None = None) -> tuple[int, int]:
        """(h, w) of the map of a ``resolution`` px image (default: ``self.resolution``), by probing."""
        with analysis_errors():
            fmap, _, _ = self.features.probe(int(resolution or self.resolution))
        return int(fmap.shape[2]), int(fmap.shape[3])

    def extra_repr(self) -> str:
        return f"source={self.source!r}, global_pool={self.global_pool!r}, layer={self.layer!r}"


def _normalisation(model: nn.Module, mean: Sequence[float] | None,
                   std: Sequence[float] | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(mean if mean is not None else cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(std if std is not None else cfg.get("std") or IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3:
        raise AnalysisError(f"mean and std need 3 values each (one per RGB channel), got {len(mean)} and {len(std)}")
    if any(float(s) <= 0 for s in std):
        raise AnalysisError(f"std must be positive, got {std}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def check_model(model: Any, layer: str | None, source: str) -> None:
    """Refuse what is not a network, or is one of this layer's encoders, and a ``layer`` that does
    not exist or comes after the global pooling: one line, before any work (weights, probes)."""
    if not isinstance(model, nn.Module):
        what = "a function" if callable(model) else type(model).__name__
        raise AnalysisError(f"from_module needs an nn.Module (a network taking (B, 3, H, W) images), got {what}")
    if isinstance(model, (Encoder, ExternalEncoder)):
        raise AnalysisError(f"{type(model).__name__} is already an encoder of the analysis layer: use it as it is")
    if layer is not None:
        with analysis_errors():
            check_layer(model, rule_for(model), layer, source)


def encoder_of(model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None, layer: str | None,
               global_pool: GlobalPool | None, resolution: int | None, source: str) -> ExternalEncoder:
    """The encoder of a checked network (``load_external`` loads its weights first)."""
    mean_t, std_t = _normalisation(model, mean, std)
    if resolution is not None and int(resolution) < 1:
        raise AnalysisError(f"resolution must be a positive number of pixels, got {resolution}")
    with analysis_errors():
        features = feature_map(model, layer=layer, global_pool=global_pool, input_size=resolution, source=source)
    encoder = ExternalEncoder(features, mean_t, std_t, source)
    return encoder.to(model_device(model)).eval()


def from_module(
    model: nn.Module,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layer: str | None = None,
    global_pool: GlobalPool | None = None,
    resolution: int | None = None,
    source: str | None = None,
) -> ExternalEncoder:
    """Wrap a network taking normalised images as an encoder of the analysis layer.

    Args:
        model: a torchvision or timm model, or any module (its weights as they are; not modified).
        mean, std: per-channel normalisation applied to the [0, 1] images (default: the model's timm
            ``pretrained_cfg``, else ImageNet's).
        layer: submodule whose output is the map (default: the family rule, module docstring).
        global_pool: ``"token"`` or ``"mean"`` (default: the model's own pooling).
        resolution: default evaluation side in pixels (default: the model's input size, else 224).
        source: the model in words for reports (default: its class name).

    Returns:
        An :class:`ExternalEncoder` in eval mode, on the model's device.

    >>> import torchvision
    >>> from_module(torchvision.models.resnet18(), resolution=64).num_features
    512
    """
    source = source or type(model).__name__
    check_model(model, layer, source)
    return encoder_of(model, mean, std, layer, global_pool, resolution, source)
