"""Analyses of trained encoders (any module mapping (B, 3, H, W) images to (B, C, h, w) feature maps).

* ``load_checkpoint`` / ``load_models`` / ``load_eval_set``: checkpoints as ready models, and the
  evaluation images they are all analysed on.
* ``erf_map`` / ``plot_erf``: effective receptive fields of local representations (Figure 4).
* ``similarity_analysis`` / ``plot_similarity``: global against local cosine similarity (Figure 3B).
* ``patch_drop_analysis`` / ``plot_patch_drop``: local redundancy via dropping local representations.
* ``internal_corruption_sweep`` / ``plot_internal_corruption``: noise, zeroing or masking inside the network.
* ``AnalysisOptions`` / ``write_report``: every analysis on groups of checkpoints, as one HTML report.

The command line (``cossl-analysis``, ``python -m cossl_analysis``) lives in ``cossl_analysis.cli``.

Names are imported lazily (PEP 562 module ``__getattr__``): importing a submodule such as
``cossl_analysis.corruptions`` runs this file first, and its worker processes should not pay for
captum, matplotlib and the rest of the analysis stack that they never use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static checkers and IDEs see the real names; at run time they load on first use
    from cossl_analysis.accuracy import classifier_accuracy, top1
    from cossl_analysis.erf import DEFAULT_POSITIONS, erf_map, plot_erf, position_indices
    from cossl_analysis.errors import AnalysisError
    from cossl_analysis.features import extract_features
    from cossl_analysis.internal_corruption import (
        corrupt_features,
        corrupted,
        internal_corruption_sweep,
        plot_internal_corruption,
        probe_accuracy,
    )
    from cossl_analysis.loading import (
        CheckpointError,
        EvalSet,
        Model,
        Pretrained,
        load_checkpoint,
        load_eval_set,
        load_models,
    )
    from cossl_analysis.options import AnalysisOptions
    from cossl_analysis.patch_drop import (
        num_dropped,
        patch_drop_analysis,
        plot_patch_drop,
        pool_kept,
        position_drop_order,
    )
    from cossl_analysis.report import write_report
    from cossl_analysis.similarity import (
        SimilarityResult,
        pearson,
        plot_similarity,
        similarity_analysis,
        similarity_from_features,
    )

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "classifier_accuracy": "accuracy",
    "top1": "accuracy",
    "DEFAULT_POSITIONS": "erf",
    "erf_map": "erf",
    "plot_erf": "erf",
    "position_indices": "erf",
    "AnalysisError": "errors",
    "extract_features": "features",
    "corrupt_features": "internal_corruption",
    "corrupted": "internal_corruption",
    "internal_corruption_sweep": "internal_corruption",
    "plot_internal_corruption": "internal_corruption",
    "probe_accuracy": "internal_corruption",
    "CheckpointError": "loading",
    "EvalSet": "loading",
    "Model": "loading",
    "Pretrained": "loading",
    "load_checkpoint": "loading",
    "load_eval_set": "loading",
    "load_models": "loading",
    "AnalysisOptions": "options",
    "num_dropped": "patch_drop",
    "patch_drop_analysis": "patch_drop",
    "plot_patch_drop": "patch_drop",
    "pool_kept": "patch_drop",
    "position_drop_order": "patch_drop",
    "write_report": "report",
    "SimilarityResult": "similarity",
    "pearson": "similarity",
    "plot_similarity": "similarity",
    "similarity_analysis": "similarity",
    "similarity_from_features": "similarity",
}

# Spelled out (not derived from _EXPORTS) so that linters see the re-exports; a test checks the two agree.
__all__ = [
    "AnalysisError",
    "AnalysisOptions",
    "CheckpointError",
    "DEFAULT_POSITIONS",
    "EvalSet",
    "Model",
    "Pretrained",
    "SimilarityResult",
    "classifier_accuracy",
    "corrupt_features",
    "corrupted",
    "erf_map",
    "extract_features",
    "internal_corruption_sweep",
    "load_checkpoint",
    "load_eval_set",
    "load_models",
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
    "top1",
    "write_report",
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
