"""RF-ResNet (CO-SSL paper, Figure 2): a bottleneck ResNet-50 whose receptive field is a parameter.

Layout (all convolutions 'same'-padded, ``padding = k // 2``)::

    stem    7x7/2 conv (padding 3) - BN - ReLU - [3x3/2 max-pool]      <- m
    layer1  n1 blocks, stride 1
    layer2  n2 blocks, first block stride s'                           <- s'
    layer3  n3 blocks, first block stride s''                          <- s''
    layer4  n4 blocks, first block stride s'''                         <- s'''

Two block types, both torchvision-style bottlenecks (1x1 reduce, middle conv, 1x1 expand,
expansion 4, projection shortcut ``downsample`` when the shape changes, stride on the middle conv):

* "3x3" block: 1x1 -> 3x3 -> 1x1 (exactly torchvision's ``Bottleneck``);
* "1x1" block: 1x1 -> 1x1 -> 1x1 (same channels, no spatial extent).

In every layer the first ``kernel3[i]`` blocks are of the 3x3 type and the rest of the 1x1 type.
A 1x1 block adds nothing to the RF (its stride, if any, only scales the jump), so the RF is set by
(m, s', s'', s''', kernel3) and does not depend on the depth n beyond the leading 3x3 blocks:
depth and parameter count can be held at ResNet-50's while the RF shrinks.

RF recurrence: the stem gives RF 7 (11 with max-pool) at jump 2 (4); each 3x3 block adds
``2 * jump`` where ``jump`` is the total stride at its input; the first block of a layer then
multiplies the jump by its stride.

Presets (``PRESETS``) keep n = (3, 4, 6, 3), the max-pool and strides (2, 2, 2) of ResNet-50, so
they all have its depth, channels and total stride 32 (a 7 x 7 map at 224 px: the same number of
local representations), and only ``kernel3`` changes the RF. The 3x3 blocks are kept in the early
layers, where each widens the RF least. A 1x1 block has fewer weights than a 3x3 one, so the
parameter count grows with the RF: 14.1 M (rf43) to 23.5 M (rf427) at width 64. Each preset's
name carries the RF computed by ``receptive_field`` (checked in the tests); ``rf_resnet50_rf427``
is ResNet-50 itself. Other settings: ``RFResNet(as_spec(...))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, conv1x1

from .resnet import init_resnet_weights, make_stem

__all__ = ["RFResNet", "RFResNetSpec", "PointwiseBottleneck", "PRESETS", "as_spec"]


class PointwiseBottleneck(Bottleneck):
    """The "1x1" block: torchvision's ``Bottleneck`` with its 3x3 conv replaced by a 1x1 conv.

    Same channels, names and shortcut as the 3x3 block; a stride (first block of a layer) sits on
    the middle 1x1 conv, like the v1.5 layout puts it on the 3x3.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__(inplanes, planes, stride, downsample)
        # assigning an existing attribute keeps its registration slot, so modules() order
        # (conv1, bn1, conv2, ...) stays the forward order
        self.conv2 = conv1x1(planes, planes, stride)


@dataclass(frozen=True)
class RFResNetSpec:
    """The RF-setting parameters of Figure 2.

    Attributes:
        blocks: n, number of blocks in layer1..layer4.
        maxpool: m, whether the stem has its 3x3/2 max-pool.
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


#: named presets, RF in the name (ImageNet stem, 224 px -> 7 x 7 for all of them)
PRESETS: dict[str, RFResNetSpec] = {
    "rf_resnet50_rf43": RFResNetSpec(kernel3=(1, 1, 1, 0)),
    "rf_resnet50_rf67": RFResNetSpec(kernel3=(2, 2, 1, 0)),
    "rf_resnet50_rf107": RFResNetSpec(kernel3=(3, 2, 1, 1)),
    "rf_resnet50_rf155": RFResNetSpec(kernel3=(3, 3, 2, 1)),
    "rf_resnet50_rf203": RFResNetSpec(kernel3=(3, 4, 3, 1)),
    "rf_resnet50_rf299": RFResNetSpec(kernel3=(3, 4, 6, 1)),
    "rf_resnet50_rf427": RFResNetSpec(kernel3=(3, 4, 6, 3)),
}


class RFResNet(nn.Module):
    """RF-ResNet trunk: (B, 3, H, W) -> (B, num_features, h, w), no pooling, no classifier.

    Args:
        spec: the RF-setting parameters (n, m, s', s'', s''', kernel3); default ResNet-50's.
        width: base channel count (64 = ResNet-50); ``num_features = 32 * width``.
        small_image: CIFAR-style stem (3x3 stride-1 conv, no max-pool, whatever ``spec.maxpool``);
            the RF and total stride then differ from the preset's name (see ``backbone_info``).

    Output side: ``ceil(H / (4 * s' * s'' * s'''))`` with the standard stem and max-pool (224 px ->
    7 x 7 for the default strides); without the max-pool, or with ``small_image``, the factor 4 is
    2 or 1. Module names follow torchvision's ResNet, so with the default spec the state dict
    matches ``resnet50``'s.
    """

    def __init__(self, spec: RFResNetSpec | None = None, width: int = 64, small_image: bool = False) -> None:
        super().__init__()
        spec = RFResNetSpec() if spec is None else spec
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
            inplanes = planes * Bottleneck.expansion
        self.num_features: int = inplanes
        init_resnet_weights(self)

    @staticmethod
    def _make_layer(inplanes: int, planes: int, blocks: int, stride: int, kernel3: int) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
        layers: list[nn.Module] = []
        for j in range(blocks):
            block = Bottleneck if j < kernel3 else PointwiseBottleneck
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
