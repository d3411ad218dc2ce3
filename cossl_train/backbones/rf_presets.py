"""Named RF-ResNet settings: each name carries the RF of the network as built with its default stem.

All presets keep their family's depth, channels and strides (n, m, s', s'', s''' of torchvision's
ResNet-18 / ResNet-50); only ``kernel3`` and the stem change the RF. A 3x3 block's RF gain is
``2 * jump`` per 3x3 conv (see ``rf_resnet``), so with strides (2, 2, 2) the gains are:

=====================  =====  ===================  ===================  ===================  ==========
family, stem           stem   layer1 block         layer2 (1st, rest)   layer3 (1st, rest)   layer4 ...
=====================  =====  ===================  ===================  ===================  ==========
RF-ResNet-18, small    3      4                    6, 8                 12, 16               24, 32
RF-ResNet-18, ImageNet 11     16                   24, 32               48, 64               96, 128
RF-ResNet-50, ImageNet 11     8                    8, 16                16, 32               32, 64
=====================  =====  ===================  ===================  ===================  ==========

(ImageNet stem: 7x7/2 conv and 3x3/2 max-pool; small stem: 3x3/1 conv, no max-pool.) The RF is the
stem's plus the gains of the leading 3x3 blocks; the ImageNet stem therefore only reaches RFs
11 + 8k, the small stem 3 + 2k (not all k).

``PRESETS``: the Figure 2 sweep of RF-ResNet-50 (ImageNet stem, 224 px -> 7 x 7, total stride 32),
43 to 427 px, the backbones of the Figure 3A grid; ``rf_resnet50_rf427`` is ResNet-50 itself.

The other presets are chosen by one rule: among the ``kernel3`` that give the RF (with the family's
n, m and strides, so the map size and depth stay the full network's), take the one with the most
3x3 blocks (the most spatial processing within that RF), ties going to the earlier layers, where a
3x3 block widens the RF least. ``tests/test_backbones.py`` re-derives every one of them.

* ``rf_resnet18_rf29`` (the paper's Tiny-ImageNet backbone, 29 px RF on 64 px images, 8 x 8 map):
  small stem, kernel3 = (2, 1, 1, 0): 3 + 4 + 4 + 6 + 12 = 29. The only other setting with RF 29,
  (0, 2, 1, 0) (3 + 6 + 8 + 12), has one 3x3 block fewer. The ImageNet stem cannot give 29.
* ``rf_resnet18_rf13`` (1, 1, 0, 0) and ``rf_resnet18_rf17`` (2, 1, 0, 0): small stem, for 32 px
  images (RF 41 % and 53 % of the side; 4 x 4 map). 15 (0, 0, 1, 0) is the only RF in between.
* ``rf_resnet18_rf45`` (2, 1, 2, 0): small stem, 64 px (70 % of the side; 8 x 8 map).
* ``rf_resnet18_rf43`` (2, 0, 0, 0) and ``rf_resnet18_rf99`` (2, 2, 0, 0): ImageNet stem, 224 px
  (7 x 7 map), the RFs of ``rf_resnet50_rf43`` / ``rf_resnet50_rf99`` for comparison across families.
* ``rf_resnet50_rf99`` (the paper's ImageNet backbone, 99 px at 224 px): ImageNet stem, max-pool,
  strides (2, 2, 2) (7 x 7 map), kernel3 = (2, 4, 1, 0): 11 + 8 + 8 + 8 + 16 + 16 + 16 + 16 = 99,
  7 3x3 blocks; the 10 other kernel3 with RF 99 have at most 6. Dropping the max-pool and moving
  its stride to layer4 (strides (2, 2, 4), still 7 x 7) would allow 10 3x3 blocks, but runs layer1
  at 4x the cost and makes layer4's first block a stride-4 1x1 that skips 15 of 16 positions.

The small-image presets default to the small stem and the pool MLP; ``build_backbone`` can force
either stem (the RF then differs from the name).
"""

from __future__ import annotations

from dataclasses import dataclass

from .rf_resnet import RESNET18_SPEC, RESNET50_SPEC, RFResNet, RFResNet18, RFResNetSpec

__all__ = ["Preset", "PRESETS", "ALL_PRESETS"]


@dataclass(frozen=True)
class Preset:
    """A named RF-ResNet: its family, spec, default stem and the image side it is meant for."""

    family: type[RFResNet]
    spec: RFResNetSpec
    small_image: bool = False
    input_size: int = 224

    @property
    def family_name(self) -> str:
        return "RF-ResNet-18" if issubclass(self.family, RFResNet18) else "RF-ResNet-50"


def _r18(kernel3: tuple[int, int, int, int], small_image: bool, input_size: int) -> Preset:
    spec = RFResNetSpec(RESNET18_SPEC.blocks, RESNET18_SPEC.maxpool, RESNET18_SPEC.strides, kernel3)
    return Preset(RFResNet18, spec, small_image, input_size)


def _r50(kernel3: tuple[int, int, int, int]) -> RFResNetSpec:
    return RFResNetSpec(RESNET50_SPEC.blocks, RESNET50_SPEC.maxpool, RESNET50_SPEC.strides, kernel3)


#: the Figure 2 sweep, RF-ResNet-50, ImageNet stem (224 px -> 7 x 7 for all of them)
PRESETS: dict[str, RFResNetSpec] = {
    "rf_resnet50_rf43": _r50((1, 1, 1, 0)),
    "rf_resnet50_rf67": _r50((2, 2, 1, 0)),
    "rf_resnet50_rf107": _r50((3, 2, 1, 1)),
    "rf_resnet50_rf155": _r50((3, 3, 2, 1)),
    "rf_resnet50_rf203": _r50((3, 4, 3, 1)),
    "rf_resnet50_rf299": _r50((3, 4, 6, 1)),
    "rf_resnet50_rf427": _r50((3, 4, 6, 3)),
}

_RF_RESNET50 = {name: Preset(RFResNet, spec) for name, spec in PRESETS.items()}

#: every preset, in registry order: RF-ResNet-18 (small stem, then ImageNet stem), then RF-ResNet-50,
#: each by growing RF
ALL_PRESETS: dict[str, Preset] = {
    "rf_resnet18_rf13": _r18((1, 1, 0, 0), small_image=True, input_size=32),
    "rf_resnet18_rf17": _r18((2, 1, 0, 0), small_image=True, input_size=32),
    "rf_resnet18_rf29": _r18((2, 1, 1, 0), small_image=True, input_size=64),
    "rf_resnet18_rf45": _r18((2, 1, 2, 0), small_image=True, input_size=64),
    "rf_resnet18_rf43": _r18((2, 0, 0, 0), small_image=False, input_size=224),
    "rf_resnet18_rf99": _r18((2, 2, 0, 0), small_image=False, input_size=224),
    "rf_resnet50_rf43": _RF_RESNET50["rf_resnet50_rf43"],
    "rf_resnet50_rf67": _RF_RESNET50["rf_resnet50_rf67"],
    "rf_resnet50_rf99": Preset(RFResNet, _r50((2, 4, 1, 0))),
    **{name: p for name, p in _RF_RESNET50.items() if name not in ("rf_resnet50_rf43", "rf_resnet50_rf67")},
}
