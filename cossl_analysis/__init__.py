"""Analyses of trained encoders (any module mapping (B, 3, H, W) images to (B, C, h, w) feature maps).

* ``erf_map`` / ``plot_erf``: effective receptive fields of local representations (Figure 4).
* ``similarity_analysis`` / ``plot_similarity``: local vs global cosine similarity (Figure 3B).
* ``patch_drop_analysis`` / ``plot_patch_drop``: local redundancy via dropping local representations.
* ``internal_corruption_sweep`` / ``plot_internal_corruption``: noise or zeroing inside the network.
"""

from cossl_analysis.erf import DEFAULT_POSITIONS, erf_map, plot_erf, position_indices
from cossl_analysis.internal_corruption import (
    corrupt_features,
    corrupted,
    internal_corruption_sweep,
    plot_internal_corruption,
    probe_accuracy,
)
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

__all__ = [
    "DEFAULT_POSITIONS",
    "SimilarityResult",
    "corrupt_features",
    "corrupted",
    "erf_map",
    "extract_features",
    "internal_corruption_sweep",
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
