"""The CO objective: per-position maps of own-image cosine and retrieval, one column per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cossl_analysis.analyses.co_objective import ObjectiveResult

__all__ = ["plot_objective_maps"]


def plot_objective_maps(results: Mapping[str, ObjectiveResult], axes: Sequence[Axes] | None = None) -> Figure:
    """Row 1: the mean cosine of each position's local query to its own image's global target;
    row 2: the fraction of images whose own target is the query's nearest (chance in the title).
    One column per result; ``axes``: 2 x len(results) axes, row by row."""
    if not results:
        raise ValueError("plot_objective_maps needs at least one result")
    n = len(results)
    if axes is None:
        fig = Figure(figsize=(2.6 * n + 0.8, 5.2))
        grid = fig.subplots(2, n, squeeze=False)
    else:
        if len(axes) != 2 * n:
            raise ValueError(f"{2 * n} axes needed, {len(axes)} given")
        fig = axes[0].get_figure()  # type: ignore[assignment]
        grid = np.array(list(axes), dtype=object).reshape(2, n)
    for k, (label, r) in enumerate(results.items()):
        top = grid[0, k].imshow(r.own_cosine_map, cmap="viridis", vmin=-1, vmax=1)
        grid[0, k].set_title(f"{label}\n{r.path}\nown cosine {r.own_cosine:.3f} (others {r.other_cosine:.3f})",
                             fontsize=8)
        bottom = grid[1, k].imshow(100 * np.asarray(r.retrieval_map), cmap="magma", vmin=0, vmax=100)
        grid[1, k].set_title(f"own-image retrieval {100 * r.retrieval:.1f}% (chance {100 * r.chance:.1f}%)",
                             fontsize=8)
        for ax in grid[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(top, ax=list(grid[0]), shrink=0.8, label="cosine")
    fig.colorbar(bottom, ax=list(grid[1]), shrink=0.8, label="retrieval (%)")
    return fig
