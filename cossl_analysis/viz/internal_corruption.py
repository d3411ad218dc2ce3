"""Internal corruption: probe accuracy against the corruption strength."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cossl_analysis.analyses.internal_corruption import STRENGTH_NAMES, InternalCorruptionResult
from cossl_analysis.viz.panels import new_axes

__all__ = ["plot_internal_corruption"]


def plot_internal_corruption(results: Mapping[str, InternalCorruptionResult], ax: Axes | None = None) -> Figure:
    """One curve per result (its kind and module in the legend), chance as a dotted line."""
    fig, (ax,) = new_axes(1, (5.5, 4), None if ax is None else [ax])
    for k, (label, r) in enumerate(results.items()):
        ax.plot(r.strengths, 100 * np.asarray(r.accuracy), marker="o", color=f"C{k % 10}",
                label=f"{label} ({r.kind} @ {r.module or 'output'})")
    chance = {r.chance for r in results.values()} - {None}
    if len(chance) == 1:
        ax.axhline(100 * chance.pop(), color="gray", linestyle=":", label="chance")
    kinds = {r.kind for r in results.values()}
    ax.set_xlabel(STRENGTH_NAMES[kinds.pop()] if len(kinds) == 1 else "corruption strength")
    ax.set_ylabel("linear-probe top-1 accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
