"""Backbone registry: every backbone maps (B, 3, H, W) to a feature map (B, C, h, w).

Each backbone exposes ``num_features`` (= C) and does no pooling; the encoder's caller pools
(``cossl_train.encoder.global_pool``). Names (``list_backbones()``):

* ``resnet18``, ``resnet50``: torchvision's ResNets without classifier; ``small_image=True`` gives
  the CIFAR-style stem (32 px in -> 4 x 4 out).
* ``rf_resnet50_rf<N>``: RF-ResNet presets (paper Figure 2), RF of N x N pixels, 43 <= N <= 427.
* ``bagnet33``: BagNet-33, RF 33 x 33, ResNet-50's channels and depth.

``backbone_info(name)`` gives the RF (size, jump, start), parameter count, ``num_features`` and
output side without running a forward (the network is built on the ``meta`` device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .bagnet import BagNet, bagnet33
from .receptive_field import ReceptiveField, gradient_rf_probe, output_size, receptive_field
from .resnet import ResNet, count_parameters, resnet18, resnet50
from .rf_resnet import PRESETS, RFResNet, RFResNetSpec

__all__ = [
    "build_backbone",
    "list_backbones",
    "backbone_info",
    "ReceptiveField",
    "receptive_field",
    "output_size",
    "gradient_rf_probe",
    "count_parameters",
    "ResNet",
    "RFResNet",
    "RFResNetSpec",
    "BagNet",
    "PRESETS",
]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[[bool, int], nn.Module]  # (small_image, width) -> backbone
    description: str
    small_image: bool = True  # whether the small-image stem is available


def _no_small_image(name: str, build: Callable[[int], nn.Module]) -> Callable[[bool, int], nn.Module]:
    def factory(small_image: bool, width: int) -> nn.Module:
        if small_image:
            raise ValueError(f"backbone {name!r} has no small-image stem (its stem already has stride 1)")
        return build(width)

    return factory


def _rf_preset(spec: RFResNetSpec) -> Callable[[bool, int], nn.Module]:
    return lambda small_image, width: RFResNet(spec, width=width, small_image=small_image)


_REGISTRY: dict[str, _Entry] = {
    "resnet18": _Entry(lambda s, w: resnet18(width=w, small_image=s), "ResNet-18 (torchvision layout)"),
    "resnet50": _Entry(lambda s, w: resnet50(width=w, small_image=s), "ResNet-50 v1.5 (torchvision layout)"),
}
for _name, _spec in PRESETS.items():
    _REGISTRY[_name] = _Entry(
        _rf_preset(_spec), f"RF-ResNet-50, kernel3={_spec.kernel3}, max-pool, strides {_spec.strides}"
    )
_REGISTRY["bagnet33"] = _Entry(
    _no_small_image("bagnet33", bagnet33), "BagNet-33 (valid 3x3 convs, RF 33)", small_image=False
)


def list_backbones() -> list[str]:
    """Registered backbone names, in registration order (RF-ResNet presets by growing RF)."""
    return list(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(_REGISTRY)}") from None


def build_backbone(name: str, *, small_image: bool = False, width: int = 64) -> nn.Module:
    """A freshly initialised backbone (B, 3, H, W) -> (B, num_features, h, w).

    Args:
        name: one of ``list_backbones()``.
        small_image: CIFAR-style stem (3x3 stride-1 first conv, no max-pool) for ResNets and
            RF-ResNets; refused by ``bagnet33``.
        width: base channel count (64 = the standard networks); ``num_features`` scales with it.

    Raises:
        ValueError: unknown name, ``width < 1``, or ``small_image`` for a backbone without it.
    """
    if width < 1:
        raise ValueError(f"backbone width must be >= 1, got {width}")
    return _entry(name).factory(small_image, width)


def backbone_info(name: str, small_image: bool = False, *, width: int = 64, input_size: int = 224) -> dict[str, Any]:
    """Geometry and size of a backbone, computed without a forward pass.

    Returns a dict with ``name``, ``description``, ``rf`` (RF side, pixels), ``jump`` (total
    stride), ``start`` (first input pixel of output position 0's RF; see ``ReceptiveField``), ``params``
    (parameter count at ``width``), ``num_features``, ``input_size`` and ``feature_size`` (side h of
    the output map for an ``input_size`` px square input; 0 if the input is too small), and
    ``small_image_available`` (whether ``small_image=True`` is accepted). For
    ``bagnet33`` also ``resnet50_params``, ResNet-50's count at the same width, for comparison.
    """
    entry = _entry(name)
    with torch.device("meta"):  # no memory, no compute: only shapes and layer attributes are read
        net = entry.factory(small_image, width)
        rf = receptive_field(net)
        info: dict[str, Any] = {
            "name": name,
            "description": entry.description,
            "small_image": small_image,
            "small_image_available": entry.small_image,
            "width": width,
            "rf": rf.size,
            "jump": rf.jump,
            "start": rf.start,
            "params": count_parameters(net),
            "num_features": int(net.num_features),
            "input_size": input_size,
            "feature_size": output_size(net, input_size),
        }
        if isinstance(net, BagNet):
            info["resnet50_params"] = count_parameters(resnet50(width=width))
    return info
