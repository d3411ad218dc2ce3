"""cossl_train: the training core of CO-SSL. The public parts below are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FeatureMap", "feature_map"]

_EXPORTS = {"FeatureMap": "cossl_train.backbones.external", "feature_map": "cossl_train.backbones.external"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cossl_train' has no attribute {name!r}")
