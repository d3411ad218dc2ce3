"""BagNet-33 (Brendel & Bethge, ICLR 2019): ResNet-50's channels and depth with valid 3x3 convs in
the first block of each layer only, so the RF is 33 x 33 pixels (docs/training.md, "Backbones")."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import conv1x1

from .resnet import init_resnet_weights

__all__ = ["BagNet", "BagBottleneck", "bagnet33"]


class BagBottleneck(nn.Module):
    """Bottleneck 1x1 -> kxk (valid, stride on it) -> 1x1 with a residual cropped to the output.

    (B, inplanes, H, W) -> (B, 4 * planes, H', W') with H' = (H - k) // stride + 1.
    """

    expansion: int = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, kernel_size: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        # Output position i of the valid kxk conv covers inputs [i*s, i*s + k - 1], centred on
        # i*s + k//2. Shifting the shortcut's input by k//2 before the (strided) projection makes
        # residual position i read exactly that centre pixel; the original crops the bottom/right
        # instead, which aligns the residual with the window's corner (a 1-pixel shift per block).
        # Either way the shortcut reads pixels inside the main path's window, so the RF is unchanged.
        self.offset = kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x[:, :, self.offset :, self.offset :] if self.offset else x
        if self.downsample is not None:
            identity = self.downsample(identity)
        identity = identity[:, :, : out.shape[-2], : out.shape[-1]]
        return self.relu(out + identity)


class BagNet(nn.Module):
    """BagNet trunk: (B, 3, H, W) -> (B, num_features, h, w), no pooling, no classifier.

    Args:
        layers: bottlenecks per layer.
        strides: stride of the first block of layer1..layer4.
        kernel3: number of leading blocks per layer whose middle conv is 3x3 (valid); others 1x1.
        width: base channel count (64 = the original); ``num_features = 32 * width``.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        strides: tuple[int, int, int, int] = (2, 2, 2, 1),
        kernel3: tuple[int, int, int, int] = (1, 1, 1, 1),
        width: int = 64,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        # registration order = forward order (the RF calculator relies on it)
        self.conv1 = conv1x1(3, width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for i in range(4):
            planes = width * 2**i
            out = planes * BagBottleneck.expansion
            downsample = None
            if strides[i] != 1 or inplanes != out:
                downsample = nn.Sequential(conv1x1(inplanes, out, strides[i]), nn.BatchNorm2d(out))
            blocks: list[nn.Module] = []
            for j in range(layers[i]):
                k = 3 if j < kernel3[i] else 1
                if j == 0:
                    blocks.append(BagBottleneck(inplanes, planes, strides[i], k, downsample))
                else:
                    blocks.append(BagBottleneck(out, planes, 1, k))
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = out
        self.num_features: int = inplanes
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_features, h, w); h = 24 for H = 224, needs H >= 33."""
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def bagnet33(width: int = 64) -> BagNet:
    """BagNet-33: blocks [3, 4, 6, 3], strides [2, 2, 2, 1], one 3x3 block per layer; RF 33, jump 8."""
    return BagNet((3, 4, 6, 3), (2, 2, 2, 1), (1, 1, 1, 1), width=width)
