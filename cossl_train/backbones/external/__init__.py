"""The pre-pooling feature map, and the model's own global representation, of any network.

:func:`feature_map` picks the first rule of :data:`RULES` that matches the network; each rule is
one module (the family's definition of its map and its global, see docs/training.md, "Any
backbone"). Adding a family is one new rule module and one line in :data:`RULES`.
"""

from __future__ import annotations

from torch import nn

from .base import Pooling, Rule, Shared
from .densenet import TorchvisionDenseNet
from .featuremap import FeatureMap
from .generic import Generic
from .swin import TimmChannelsLast, TorchvisionSwin
from .timm_cnn import TimmCNN
from .timm_vit import TimmViT
from .torchvision_cnn import TorchvisionMeanOfChild, TorchvisionNoGlobalPool, TorchvisionPooled
from .torchvision_convnext import TorchvisionConvNeXt
from .torchvision_vit import TorchvisionViT

__all__ = ["RULES", "FeatureMap", "Pooling", "Rule", "Shared", "feature_map", "rule_for"]

#: the family rules, most specific first; :class:`Generic` matches every module
RULES: list[type[Rule]] = [
    TorchvisionConvNeXt,
    TorchvisionDenseNet,
    TorchvisionViT,
    TorchvisionSwin,
    TorchvisionNoGlobalPool,
    TorchvisionMeanOfChild,
    TimmChannelsLast,
    TimmViT,
    TimmCNN,
    TorchvisionPooled,
    Generic,
]


def rule_for(net: nn.Module) -> Rule:
    """The rule of ``net``'s family (the first of :data:`RULES` that matches)."""
    return next(rule for rule in RULES if rule.matches(net))()


def feature_map(model: nn.Module, *, layer: str | None = None, global_pool: str | None = None,
                input_size: int | None = None, source: str | None = None) -> FeatureMap:
    """``model`` as a module from normalised images (B, 3, H, W) to its pre-pooling feature map
    (B, C, h, w), with ``num_features`` and ``forward_global(x) -> (map, global)``.

    Works for this package's ResNets and RF-ResNets (their output is the map), torchvision CNNs,
    ConvNeXts, DenseNets, Swins and ViTs, timm CNNs and ViTs/DeiTs (patch tokens on the patch
    grid; class, distillation and register tokens left out), and any module returning a map. The
    global is what the model itself feeds its final linear classifier (docs/training.md). Nothing
    is copied: the returned module runs ``model`` itself, and gradients flow into it.

    Args:
        model: the network; an existing :class:`FeatureMap` is returned as it is.
        layer, global_pool, input_size, source: see :class:`FeatureMap`.

    Raises:
        BackboneError: one line when the network gives no map, does not run at ``input_size``, or
            ``layer`` / ``global_pool`` do not apply.

    >>> import torch, torchvision
    >>> from cossl_train import feature_map
    >>> fm = feature_map(torchvision.models.resnet18(), input_size=64)
    >>> fmap, g = fm.forward_global(torch.randn(2, 3, 64, 64))
    >>> tuple(fmap.shape), tuple(g.shape), fm.num_features
    ((2, 512, 2, 2), (2, 512), 512)
    """
    if isinstance(model, FeatureMap) and layer is None and global_pool is None and input_size is None:
        return model
    if not isinstance(model, nn.Module):
        from ...errors import BackboneError

        raise BackboneError(f"feature_map needs an nn.Module, got {type(model).__name__}")
    return FeatureMap(model, rule_for(model), layer, global_pool, input_size, source)
