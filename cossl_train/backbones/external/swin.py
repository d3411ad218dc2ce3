"""Swin transformers, whose maps are channels-last (B, h, w, C) inside the network.

* torchvision ``SwinTransformer``: the map is the input of ``avgpool`` (after the final norm and
  the model's own permute to channels-first); the global is its spatial mean.
* timm models with ``output_fmt`` NHWC (Swin, Swin-V2): ``forward_features`` permuted to
  channels-first; the global is the model's ``forward_head(pre_logits=True)`` (timm CNN rule).

Inner layers named with ``layer=`` (a stage, the patch embedding) are channels-last too and are
permuted to (B, C, h, w); a layer found channels-first at the probe (a convolution inside the
patch embedding, torchvision's ``permute``) is read as it is.
"""

from __future__ import annotations

from torch import Tensor, nn

from .timm_cnn import TimmCNN, is_timm
from .torchvision_cnn import TorchvisionPooled, is_torchvision


class TorchvisionSwin(TorchvisionPooled):
    name = "torchvision Swin"
    nhwc = True

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return is_torchvision(net) and type(net).__name__ == "SwinTransformer"

    def map_text(self, net: nn.Module) -> str:
        return "input of 'avgpool' (the final norm's output, channels first)"


class TimmChannelsLast(TimmCNN):
    name = "timm channels-last model"
    nhwc = True

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return is_timm(net) and str(getattr(net, "output_fmt", "NCHW")).endswith("NHWC")

    def map_text(self, net: nn.Module) -> str:
        return "output of forward_features, channels first"

    def finish(self, net: nn.Module, fmap: Tensor) -> Tensor:
        return fmap.permute(0, 3, 1, 2)
