"""Image corruptions: accuracy per corruption, the groups side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cossl_analysis.viz.panels import new_axes

__all__ = ["plot_corruption_bars"]


def plot_corruption_bars(names: Sequence[str], values: Mapping[str, Sequence[float]], chance: float,
                         ax: Axes | None = None) -> Figure:
    """Horizontal bars: one row per corruption (canonical order from the top), one bar per group."""
    fig, (ax,) = new_axes(1, (7, max(3.5, 0.3 * len(names) + 1.5)), None if ax is None else [ax])
    height = 0.8 / len(values)
    y = np.arange(len(names))
    for k, (g, v) in enumerate(values.items()):
        ax.barh(y + (k - (len(values) - 1) / 2) * height, v, height=height, color=f"C{k % 10}", label=g)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(chance, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("top-1 accuracy (%), mean over severities and seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
