"""Backbone registry: every backbone maps (B, 3, H, W) to a feature map (B, C, h, w), exposes
``num_features`` (= C) and does no pooling. ``list_backbones``, ``build_backbone``, the per-backbone
defaults (stem, pool MLP) and ``backbone_info`` (RF, size, output side, without a forward pass).

Any other network is named by a model spec (``torchvision:NAME``, ``timm:NAME``,
``MODULE:FUNCTION``; :mod:`.spec`) and used through its family's feature-map rule
(:mod:`.external`): :func:`spec_backbone`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..encoder import PoolMLP
from .bagnet import BagNet, bagnet33
from .receptive_field import ReceptiveField, gradient_rf_probe, output_size, receptive_field
from .resnet import ResNet, count_parameters, resnet18, resnet50
from .rf_presets import ALL_PRESETS, PRESETS, Preset
from .rf_resnet import RFResNet, RFResNet18, RFResNetSpec

__all__ = [
    "build_backbone",
    "spec_backbone",
    "list_backbones",
    "backbone_info",
    "backbone_defaults",
    "ReceptiveField",
    "receptive_field",
    "output_size",
    "gradient_rf_probe",
    "count_parameters",
    "ResNet",
    "RFResNet",
    "RFResNet18",
    "RFResNetSpec",
    "BagNet",
    "PRESETS",
    "ALL_PRESETS",
]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[[bool, int], nn.Module]  # (small_image, width) -> backbone
    description: str
    small_image: bool = False  # default stem
    small_image_available: bool = True  # whether the small-image stem can be built
    pool_mlp: bool = False  # default of the MLP after average pooling
    input_size: int = 224  # image side the backbone is meant for, with its default stem
    stem: str = "imagenet"  # name of its stem when not the small-image one


def _rf_entry(preset: Preset) -> _Entry:
    spec, family = preset.spec, preset.family
    stem = "small-image stem" if preset.small_image else "ImageNet stem"
    return _Entry(
        lambda small_image, width: family(spec, width=width, small_image=small_image),
        f"{preset.family_name}, kernel3={spec.kernel3}, {stem}, strides {spec.strides}",
        small_image=preset.small_image,
        pool_mlp=True,
        input_size=preset.input_size,
    )


_REGISTRY: dict[str, _Entry] = {
    "resnet18": _Entry(lambda s, w: resnet18(width=w, small_image=s), "ResNet-18 (torchvision layout)"),
    "resnet50": _Entry(lambda s, w: resnet50(width=w, small_image=s), "ResNet-50 v1.5 (torchvision layout)"),
    **{name: _rf_entry(preset) for name, preset in ALL_PRESETS.items()},
    "bagnet33": _Entry(
        lambda s, w: bagnet33(w), "BagNet-33 (valid 3x3 convs, RF 33)", small_image_available=False, stem="bagnet"
    ),
}

#: image side assumed for a stem that is not the backbone's default (CIFAR-size / ImageNet-size)
_STEM_INPUT_SIZE = {True: 32, False: 224}


def list_backbones() -> list[str]:
    """Registered backbone names, in registration order (RF-ResNet presets by family, then growing RF)."""
    return list(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(_REGISTRY)}") from None


def _stem(name: str, entry: _Entry, small_image: bool | None) -> bool:
    """The stem to build: the backbone's default for ``None``, else the one asked for, if it exists."""
    if small_image is None:
        return entry.small_image
    if small_image and not entry.small_image_available:
        raise ValueError(f"backbone {name!r} has no small-image stem (its stem already has stride 1)")
    return bool(small_image)


def backbone_defaults(name: str) -> dict[str, bool]:
    """Per-backbone defaults: ``small_image`` (its own stem) and ``pool_mlp`` (MLP after pooling),
    and ``small_image_available`` (whether the small-image stem can be built).

    Raises:
        ValueError: unknown name.
    """
    entry = _entry(name)
    return {"small_image": entry.small_image, "pool_mlp": entry.pool_mlp,
            "small_image_available": entry.small_image_available}


def build_backbone(name: str, *, small_image: bool | None = None, width: int = 64) -> nn.Module:
    """A freshly initialised backbone (B, 3, H, W) -> (B, num_features, h, w).

    Args:
        name: one of ``list_backbones()``.
        small_image: ``None``: the backbone's own stem (``backbone_defaults(name)["small_image"]``);
            ``True``: the CIFAR-style stem (3x3 stride-1 first conv, no max-pool), refused by
            ``bagnet33``; ``False``: the ImageNet stem (bagnet33: its own).
        width: base channel count (64 = the standard networks); ``num_features`` scales with it.

    Raises:
        ValueError: unknown name, ``width < 1``, or ``small_image=True`` for a backbone without it.
    """
    entry = _entry(name)
    if width < 1:
        raise ValueError(f"backbone width must be >= 1, got {width}")
    return entry.factory(_stem(name, entry, small_image), width)


def spec_backbone(name: str, kwargs: dict[str, Any] | None = None, input_sizes: tuple[int, ...] = (224,)) -> nn.Module:
    """The network a model spec names (``torchvision:``, ``timm:``, ``MODULE:FUNCTION``), freshly
    initialised, as a trainable :class:`~cossl_train.backbones.external.FeatureMap` (its
    pre-pooling map, ``num_features`` and the model's own global).

    Args:
        name: the spec (as ``backbone.name``; no weights file).
        kwargs: keyword arguments of the library's builder (``backbone.kwargs``).
        input_sizes: the image sides it must run at (training and local crops): each is probed
            once, so a size the network refuses is one line here, not a traceback in training.

    Raises:
        BackboneError: one line starting ``backbone.name=<spec>``.

    >>> fm = spec_backbone("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 1}, (32,))
    >>> fm.num_features, fm.map_size, fm.global_pool
    (192, (4, 4), 'token')
    """
    from ..errors import BackboneError
    from .external import feature_map
    from .library import build_model
    from .spec import parse_spec

    where = f"backbone.name={name}"
    try:
        net = build_model(parse_spec(name), kwargs)
    except BackboneError as err:
        raise BackboneError(f"{where}: {err}") from None
    fm = feature_map(net, input_size=input_sizes[0], source=where)
    for size in input_sizes[1:]:
        fm.probe(size)
    return fm


def backbone_info(
    name: str, small_image: bool | None = None, *, width: int = 64, input_size: int | None = None
) -> dict[str, Any]:
    """Geometry and size of a backbone, computed without a forward pass.

    Args:
        name, small_image, width: as for ``build_backbone``.
        input_size: image side for ``feature_size``; default the side the backbone is meant for:
            its preset's (224, or 32 / 64 for the small-image presets) with its default stem, 32
            with a forced small-image stem, 224 with a forced ImageNet stem.

    Returns a dict with ``name``, ``description``, ``small_image`` (the stem built), ``stem``
    (``"small"``, ``"imagenet"`` or ``"bagnet"``), ``small_image_available`` (whether
    ``small_image=True`` is accepted), ``width``, ``rf`` (RF side, pixels), ``jump`` (total stride),
    ``start`` (first input pixel of output position 0's RF; see ``ReceptiveField``), ``params``
    (trunk parameter count at ``width``), ``num_features`` (C), ``input_size`` and ``feature_size``
    (side h of the output map for an ``input_size`` px square input; 0 if the input is too small),
    ``pool_mlp`` (the default, ``backbone_defaults``) and ``pool_mlp_params`` (parameters of a
    ``PoolMLP(C, C)``, whether on by default or not). For ``bagnet33`` also ``resnet50_params``,
    ResNet-50's count at the same width, for comparison.
    """
    entry = _entry(name)
    small = _stem(name, entry, small_image)
    if input_size is None:
        input_size = entry.input_size if small == entry.small_image else _STEM_INPUT_SIZE[small]
    with torch.device("meta"):  # no memory, no compute: only shapes and layer attributes are read
        net = build_backbone(name, small_image=small, width=width)
        rf = receptive_field(net)
        channels = int(net.num_features)
        info: dict[str, Any] = {
            "name": name,
            "description": entry.description,
            "small_image": small,
            "stem": "small" if small else entry.stem,
            "small_image_available": entry.small_image_available,
            "width": width,
            "rf": rf.size,
            "jump": rf.jump,
            "start": rf.start,
            "params": count_parameters(net),
            "num_features": channels,
            "input_size": input_size,
            "feature_size": output_size(net, input_size),
            "pool_mlp": entry.pool_mlp,
            "pool_mlp_params": count_parameters(PoolMLP(channels, channels)),
        }
        if isinstance(net, BagNet):
            info["resnet50_params"] = count_parameters(resnet50(width=width))
    return info
