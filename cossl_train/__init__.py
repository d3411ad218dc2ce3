"""CO-SSL's training core, and its parts for any training loop.

The parts a loop of one's own (plain PyTorch, lightly, ...) needs to add the CO term, each taking
tensors, each with shapes and a runnable example in its docstring (``help(cossl_train.CoLoss)``):

* the feature map of any backbone: :func:`feature_map` (torchvision, timm or any module ->
  :class:`FeatureMap`, the map before pooling and the model's own global representation);
* losses: :class:`CoLoss` (L = (1 - w_s) L_g + w_s L_l around a base loss) and the base losses
  :class:`SimCLRLoss`, :class:`BYOLLoss`, :class:`MoCoV3Loss`, :class:`DINOLoss`;
* heads: :class:`PerPosition` (a head at every position of a feature map), :class:`MLP`,
  :class:`DINOHead`, :func:`grid_pool`;
* checkpoints of the trainer: :func:`load_method` (the whole trained method, heads included) and
  :func:`load_pretrained` (encoder and linear probe).

The trainer (``cossl-train``; docs/training.md) is built from the same parts; docs/own_loop.md shows
them in a loop of one's own. Names load on first use, so the command line starts quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static checkers and IDEs see the real names; at run time they load on first use
    from cossl_train.backbones.external import FeatureMap, feature_map
    from cossl_train.checkpoint import load_method, load_pretrained
    from cossl_train.heads import MLP, DINOHead, PerPosition, grid_pool
    from cossl_train.losses import BYOLLoss, CoLoss, CoLossOutput, DINOLoss, MoCoV3Loss, PairLoss, SimCLRLoss

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "FeatureMap": "backbones.external",
    "feature_map": "backbones.external",
    "CoLoss": "losses",
    "CoLossOutput": "losses",
    "PairLoss": "losses",
    "SimCLRLoss": "losses",
    "BYOLLoss": "losses",
    "MoCoV3Loss": "losses",
    "DINOLoss": "losses",
    "PerPosition": "heads",
    "MLP": "heads",
    "DINOHead": "heads",
    "grid_pool": "heads",
    "load_method": "checkpoint",
    "load_pretrained": "checkpoint",
}

__all__ = [
    "BYOLLoss",
    "CoLoss",
    "CoLossOutput",
    "DINOHead",
    "DINOLoss",
    "FeatureMap",
    "MLP",
    "MoCoV3Loss",
    "PairLoss",
    "PerPosition",
    "SimCLRLoss",
    "feature_map",
    "grid_pool",
    "load_method",
    "load_pretrained",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cossl_train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cossl_train.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
