"""Analyses of trained encoders (any module mapping (B, 3, H, W) images to (B, C, h, w) feature maps).

* ``load_checkpoint`` / ``eval_data``: a cossl checkpoint as a ready model, and evaluation images for it.
* ``erf_map`` / ``plot_erf``: effective receptive fields of local representations (Figure 4).
* ``similarity_analysis`` / ``plot_similarity``: local vs global cosine similarity (Figure 3B).
* ``patch_drop_analysis`` / ``plot_patch_drop``: local redundancy via dropping local representations.
* ``internal_corruption_sweep`` / ``plot_internal_corruption``: noise or zeroing inside the network.

The command line (``cossl-analysis``, ``python -m cossl_analysis``) lives in ``cossl_analysis.cli``.

Names are imported lazily (PEP 562 module ``__getattr__``): importing a submodule such as
``cossl_analysis.corruptions`` runs this file first, and its worker processes should not pay for
captum, matplotlib and the rest of the analysis stack that they never use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static checkers and IDEs see the real names; at run time they load on first use
    from cossl_analysis.erf import DEFAULT_POSITIONS, erf_map, plot_erf, position_indices
    from cossl_analysis.internal_corruption import (
        corrupt_features,
        corrupted,
        internal_corruption_sweep,
        plot_internal_corruption,
        probe_accuracy,
    )
    from cossl_analysis.loading import CheckpointError, EvalData, Pretrained, eval_data, load_checkpoint
    from cossl_analysis.patch_drop import (
        num_dropped,
        patch_drop_analysis,
        plot_patch_drop,
        pool_kept,
        position_drop_order,
    )
    from cossl_analysis.similarity import (
        SimilarityResult,
        extract_features,
        pearson,
        plot_similarity,
        similarity_analysis,
        similarity_from_features,
    )

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "DEFAULT_POSITIONS": "erf",
    "erf_map": "erf",
    "plot_erf": "erf",
    "position_indices": "erf",
    "corrupt_features": "internal_corruption",
    "corrupted": "internal_corruption",
    "internal_corruption_sweep": "internal_corruption",
    "plot_internal_corruption": "internal_corruption",
    "probe_accuracy": "internal_corruption",
    "CheckpointError": "loading",
    "EvalData": "loading",
    "Pretrained": "loading",
    "eval_data": "loading",
    "load_checkpoint": "loading",
    "num_dropped": "patch_drop",
    "patch_drop_analysis": "patch_drop",
    "plot_patch_drop": "patch_drop",
    "pool_kept": "patch_drop",
    "position_drop_order": "patch_drop",
    "SimilarityResult": "similarity",
    "extract_features": "similarity",
    "pearson": "similarity",
    "plot_similarity": "similarity",
    "similarity_analysis": "similarity",
    "similarity_from_features": "similarity",
}

# Spelled out (not derived from _EXPORTS) so that linters see the re-exports; a test checks the two agree.
__all__ = [
    "CheckpointError",
    "DEFAULT_POSITIONS",
    "EvalData",
    "Pretrained",
    "SimilarityResult",
    "corrupt_features",
    "corrupted",
    "erf_map",
    "eval_data",
    "extract_features",
    "internal_corruption_sweep",
    "load_checkpoint",
    "num_dropped",
    "patch_drop_analysis",
    "pearson",
    "plot_erf",
    "plot_internal_corruption",
    "plot_patch_drop",
    "plot_similarity",
    "pool_kept",
    "position_drop_order",
    "position_indices",
    "probe_accuracy",
    "similarity_analysis",
    "similarity_from_features",
]


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first access and cache the value here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
