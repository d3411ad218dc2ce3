"""torchvision ConvNeXt: the map is the input of ``avgpool`` (before any norm, as timm's
``forward_features`` gives it); the global is the spatial mean, then the channel LayerNorm that
opens the model's classifier (``classifier[0]``): what its final linear layer reads.
"""

from __future__ import annotations

from torch import nn

from .base import Pooling, Shared, mean_pooling
from .torchvision_cnn import TorchvisionPooled, is_torchvision


class TorchvisionConvNeXt(TorchvisionPooled):
    name = "torchvision ConvNeXt"

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return is_torchvision(net) and type(net).__name__ == "ConvNeXt"

    def pooling(self, net: nn.Module, channels: int, prefix: int) -> Pooling:
        return mean_pooling(Shared(net.get_submodule("classifier.0"), "norm2d", text="the classifier's LayerNorm"))
