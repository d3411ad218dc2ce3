"""ResNet-18 / ResNet-50 trunks (torchvision's blocks and module names, no classifier) with a
``width`` knob; at width 64 the state dicts are torchvision's (docs/training.md, "Backbones")."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

__all__ = ["ResNet", "resnet18", "resnet50", "init_resnet_weights", "make_stem", "count_parameters"]

Block = type[BasicBlock] | type[Bottleneck]


def init_resnet_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out) convs, BN scale 1 and shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def make_stem(width: int, small_image: bool, maxpool: bool = True) -> tuple[nn.Conv2d, nn.Module]:
    """The stem's first conv and its pooling layer.

    Standard: 7x7 stride-2 conv (padding 3) and, if ``maxpool``, a 3x3 stride-2 max-pool (padding 1):
    the input is downsampled 4x before layer1. ``small_image`` (CIFAR-style): 3x3 stride-1 conv
    (padding 1) and no max-pool, so a 32 px image keeps 32 px at layer1. The pooling slot holds
    ``nn.Identity`` when absent, so module names stay the same.
    """
    if small_image:
        return nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False), nn.Identity()
    conv = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    return conv, (nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if maxpool else nn.Identity())


def _make_layer(block: Block, inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """torchvision's ``ResNet._make_layer`` (no dilation, no groups): a 1x1 projection shortcut
    (``downsample``) on the first block when the shape changes."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            conv1x1(inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
        )
    layers: list[nn.Module] = [block(inplanes, planes, stride, downsample)]
    for _ in range(1, blocks):
        layers.append(block(planes * block.expansion, planes))
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ResNet trunk: (B, 3, H, W) -> (B, num_features, h, w), no global pooling, no classifier.

    Args:
        block: torchvision's ``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50/101).
        layers: number of blocks in layer1..layer4.
        width: base channel count; layer i has ``width * 2**(i-1)`` planes (64 = torchvision).
        small_image: CIFAR-style stem (3x3 stride-1 first conv, no max-pool); total stride 8
            instead of 32, so a 32 px input gives a 4 x 4 map and 224 px gives 28 x 28.

    Output side: ``ceil(H / 32)`` with the standard stem (224 -> 7), ``ceil(H / 8)`` with
    ``small_image`` (32 -> 4). ``num_features = 8 * width * block.expansion``.
    """

    def __init__(
        self, block: Block, layers: tuple[int, int, int, int], width: int = 64, small_image: bool = False
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.small_image = small_image
        conv1, pool = make_stem(width, small_image)
        # registration order = forward order = torchvision's order (the RF calculator relies on it)
        self.conv1 = conv1
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = pool
        inplanes = width
        for i, (n, stride) in enumerate(zip(layers, (1, 2, 2, 2), strict=True)):
            planes = width * 2**i
            self.add_module(f"layer{i + 1}", _make_layer(block, inplanes, planes, n, stride))
            inplanes = planes * block.expansion
        self.num_features: int = inplanes
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_features, h, w)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def resnet18(width: int = 64, small_image: bool = False) -> ResNet:
    """ResNet-18 trunk, BasicBlocks [2, 2, 2, 2]; RF 435 (109 with ``small_image``);
    ``num_features = 8 * width`` (512 at width 64)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), width=width, small_image=small_image)


def resnet50(width: int = 64, small_image: bool = False) -> ResNet:
    """ResNet-50 (v1.5) trunk, Bottlenecks [3, 4, 6, 3]; RF 427 (107 with ``small_image``);
    ``num_features = 32 * width`` (2048 at width 64)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), width=width, small_image=small_image)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on the ``meta`` device, no forward needed)."""
    return sum(p.numel() for p in module.parameters())
