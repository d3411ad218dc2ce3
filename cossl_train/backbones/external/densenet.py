"""torchvision DenseNet: the map is the output of ``features`` after the ReLU that the model's
forward applies to it (a functional call no hook sees); the global is its spatial mean.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .torchvision_cnn import TorchvisionMeanOfChild, is_torchvision


class TorchvisionDenseNet(TorchvisionMeanOfChild):
    name = "torchvision DenseNet"

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return is_torchvision(net) and type(net).__name__ == "DenseNet"

    def child(self, net: nn.Module) -> str:
        return "features"

    def map_text(self, net: nn.Module) -> str:
        return "output of 'features' after the model's final ReLU"

    def finish(self, net: nn.Module, fmap: Tensor) -> Tensor:
        return F.relu(fmap)
