"""Named RF-ResNet settings: each name carries the RF of the network as built with its default stem
(``PRESETS``: the Figure 2 sweep of RF-ResNet-50; the rule that picks the others and every preset's
arithmetic are in docs/training.md, "Backbones")."""

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
