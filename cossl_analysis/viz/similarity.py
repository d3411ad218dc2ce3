"""Figure 3B: global against local similarity, one scatter per model."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cossl_analysis.analyses.similarity import SimilarityResult
from cossl_analysis.viz.panels import new_axes

__all__ = ["plot_similarity_panels"]

#: characters of a title line on one panel (4.2 inches at 10 pt)
TITLE_WIDTH = 46


def plot_similarity_panels(results: Mapping[str, SimilarityResult], max_points: int = 5000, seed: int = 0,
                           titles: Mapping[str, str] | None = None, axes: Sequence[Axes] | None = None) -> Figure:
    """One scatter per result on shared axes: the cosine of local representations (x) against that
    of global ones (y), the Pearson C in the title (or ``titles[label]``) and the mean intra-image
    local similarity as a dashed line; at most ``max_points`` points drawn (C uses every pair)."""
    if not results:
        raise ValueError("plot_similarity_panels needs at least one result")
    rng = np.random.default_rng(seed)
    fig, axes = new_axes(len(results), (4.2, 4.0), axes, sharex=True, sharey=True)
    for k, (ax, (label, res)) in enumerate(zip(axes, results.items(), strict=True)):
        idx = np.arange(len(res.local_sim))
        if len(idx) > max_points:
            idx = np.sort(rng.choice(idx, size=max_points, replace=False))
        color = f"C{k % 10}"
        ax.scatter(res.local_sim[idx], res.global_sim[idx], s=5, alpha=0.35, color=color, rasterized=True,
                   label=f"image pairs ({len(res.local_sim)})")
        ax.axvline(res.intra_local_mean, color=color, linestyle="--", linewidth=1.5,
                   label=f"intra-image local ({res.intra_local_mean:.2f})")
        c = "C undefined" if np.isnan(res.pearson_c) else f"C = {res.pearson_c:.2f}"
        title = (titles or {}).get(label, f"{label}: {c}")
        # each line wrapped to the panel's width, so that neighbouring titles never run into each other
        ax.set_title("\n".join(textwrap.fill(line, TITLE_WIDTH) for line in title.splitlines()), fontsize=10)
        ax.set_xlabel("cosine similarity of local representations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", markerscale=2)
    axes[0].set_ylabel("cosine similarity of global representations")
    fig.suptitle("global against local similarity (dashed: intra-image local similarity)", fontsize=10)
    fig.tight_layout()
    return fig
