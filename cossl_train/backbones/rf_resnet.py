"""RF-ResNet (the paper's Figure 2): a ResNet whose receptive field is a parameter, in an
RF-ResNet-50 and an RF-ResNet-18 family; the first ``kernel3[i]`` blocks of each layer are 3x3, the
rest 1x1, so depth stays the full network's while the RF shrinks (docs/training.md, "Backbones")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from .resnet import init_resnet_weights, make_stem

__all__ = [
    "RFResNet",
    "RFResNet18",
    "RFResNetSpec",
    "PointwiseBottleneck",
    "PointwiseBasicBlock",
    "RESNET50_SPEC",
    "RESNET18_SPEC",
    "as_spec",
]

Block = type[BasicBlock] | type[Bottleneck]


class PointwiseBottleneck(Bottleneck):
    """The RF-ResNet-50 "1x1" block: torchvision's ``Bottleneck`` with its 3x3 conv replaced by a 1x1.

    Same channels, names and shortcut as the 3x3 block; a stride (first block of a layer) sits on
    the middle 1x1 conv, like the v1.5 layout puts it on the 3x3.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__(inplanes, planes, stride, downsample)
        # assigning an existing attribute keeps its registration slot, so modules() order
        # (conv1, bn1, conv2, ...) stays the forward order
        self.conv2 = conv1x1(planes, planes, stride)


class PointwiseBasicBlock(BasicBlock):
    """The RF-ResNet-18 "1x1" block: torchvision's ``BasicBlock`` with both 3x3 convs replaced by 1x1s.

    Same channels, names and shortcut as the 3x3 block; a stride sits on ``conv1``, as in
    ``BasicBlock``, where it samples the same pixels as the strided 1x1 shortcut.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__(inplanes, planes, stride, downsample)
        self.conv1 = conv1x1(inplanes, planes, stride)  # same registration slots: forward order kept
        self.conv2 = conv1x1(planes, planes)


@dataclass(frozen=True)
class RFResNetSpec:
    """The RF-setting parameters of Figure 2 (defaults: ResNet-50's, i.e. ``RESNET50_SPEC``).

    Attributes:
        blocks: n, number of blocks in layer1..layer4.
        maxpool: m, whether the stem has its 3x3/2 max-pool (ignored by the small-image stem).
        strides: s', s'', s''', stride of the first block of layer2, layer3, layer4.
        kernel3: number of leading blocks of each layer that are of the 3x3 type
            (0 <= kernel3[i] <= blocks[i]); the others are 1x1 blocks.
    """

    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    maxpool: bool = True
    strides: tuple[int, int, int] = (2, 2, 2)
    kernel3: tuple[int, int, int, int] = (3, 4, 6, 3)

    def __post_init__(self) -> None:
        if len(self.blocks) != 4 or len(self.kernel3) != 4 or len(self.strides) != 3:
            raise ValueError(f"need 4 blocks, 4 kernel3 and 3 strides, got {self}")
        if any(n < 1 for n in self.blocks) or any(s < 1 for s in self.strides):
            raise ValueError(f"blocks and strides must be >= 1, got {self}")
        if any(not 0 <= k <= n for k, n in zip(self.kernel3, self.blocks, strict=True)):
            raise ValueError(f"kernel3 must satisfy 0 <= kernel3[i] <= blocks[i], got {self}")


#: every block 3x3: RF-ResNet-50 = ResNet-50, RF-ResNet-18 = ResNet-18
RESNET50_SPEC = RFResNetSpec()
RESNET18_SPEC = RFResNetSpec(blocks=(2, 2, 2, 2), kernel3=(2, 2, 2, 2))


class RFResNet(nn.Module):
    """RF-ResNet-50 trunk: (B, 3, H, W) -> (B, num_features, h, w), no pooling, no classifier.

    Args:
        spec: the RF-setting parameters (n, m, s', s'', s''', kernel3); default the family's full
            spec (``full_spec``: ResNet-50 here, ResNet-18 for ``RFResNet18``).
        width: base channel count (64 = the torchvision network); ``num_features = 8 * width *
            expansion`` (2048 for RF-ResNet-50, 512 for RF-ResNet-18 at width 64).
        small_image: CIFAR-style stem (3x3 stride-1 conv, no max-pool, whatever ``spec.maxpool``);
            the RF and total stride then differ (see ``backbone_info``).

    Output side: ``ceil(H / (4 * s' * s'' * s'''))`` with the standard stem and max-pool (224 px ->
    7 x 7 for the default strides); without the max-pool, or with ``small_image``, the factor 4 is
    2 or 1.
    """

    block3: ClassVar[Block] = Bottleneck  # the "3x3" block
    block1: ClassVar[Block] = PointwiseBottleneck  # the "1x1" block
    full_spec: ClassVar[RFResNetSpec] = RESNET50_SPEC

    def __init__(self, spec: RFResNetSpec | None = None, width: int = 64, small_image: bool = False) -> None:
        super().__init__()
        spec = self.full_spec if spec is None else spec
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.spec = spec
        self.small_image = small_image
        conv1, pool = make_stem(width, small_image, maxpool=spec.maxpool)
        self.conv1 = conv1  # registration order = forward order (the RF calculator relies on it)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = pool
        inplanes = width
        strides = (1, *spec.strides)
        for i in range(4):
            planes = width * 2**i
            layer = self._make_layer(inplanes, planes, spec.blocks[i], strides[i], spec.kernel3[i])
            self.add_module(f"layer{i + 1}", layer)
            inplanes = planes * self.block3.expansion
        self.num_features: int = inplanes
        init_resnet_weights(self)

    def _make_layer(self, inplanes: int, planes: int, blocks: int, stride: int, kernel3: int) -> nn.Sequential:
        out = planes * self.block3.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
        layers: list[nn.Module] = []
        for j in range(blocks):
            block = self.block3 if j < kernel3 else self.block1
            if j == 0:
                layers.append(block(inplanes, planes, stride, downsample))
            else:
                layers.append(block(out, planes))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_features, h, w)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


class RFResNet18(RFResNet):
    """RF-ResNet-18 trunk: ``RFResNet`` with basic blocks; ``spec`` defaults to ``RESNET18_SPEC``.

    ``num_features = 8 * width`` (512 at width 64).
    """

    block3: ClassVar[Block] = BasicBlock
    block1: ClassVar[Block] = PointwiseBasicBlock
    full_spec: ClassVar[RFResNetSpec] = RESNET18_SPEC


def as_spec(
    blocks: Sequence[int] = (3, 4, 6, 3),
    maxpool: bool = True,
    strides: Sequence[int] = (2, 2, 2),
    kernel3: int | Sequence[int] = (3, 4, 6, 3),
) -> RFResNetSpec:
    """Build a spec from loose arguments; an int ``kernel3`` applies to every layer (capped at n)."""
    n = [int(b) for b in blocks]
    k = [min(kernel3, b) for b in n] if isinstance(kernel3, int) else [int(v) for v in kernel3]
    s = [int(v) for v in strides]
    if len(n) != 4 or len(k) != 4 or len(s) != 3:
        raise ValueError(f"need 4 blocks, 4 kernel3 and 3 strides, got {n}, {k}, {s}")
    return RFResNetSpec((n[0], n[1], n[2], n[3]), bool(maxpool), (s[0], s[1], s[2]), (k[0], k[1], k[2], k[3]))
