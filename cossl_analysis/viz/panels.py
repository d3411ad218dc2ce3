"""Panels of curves (one per model or group, a band for the spread): every line plot of the
analyses is a list of :class:`Panel` s drawn side by side by :func:`plot_panels`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["Panel", "Series", "new_axes", "plot_panels"]


@dataclass
class Series:
    """One curve: ``y`` against ``x``; ``spread`` (same length) is drawn as a band of y +- spread."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    spread: Sequence[float] | None = None


@dataclass
class Panel:
    """One axes: its curves, labels, an optional horizontal reference line (chance) and tick labels."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    hline: float | None = None
    hline_label: str = "chance"
    xticks: Sequence[float] | None = None
    xticklabels: Sequence[str] | None = None
    log_x: bool = False
    #: (x, text): a dotted vertical line marking a special point (e.g. "all but one")
    marker: tuple[float, str] | None = None
    #: what the bands show ("std over seeds"), named in the legend when a band is drawn
    band: str = ""
    #: the x range (None: matplotlib's)
    xlim: tuple[float, float] | None = None


def new_axes(n: int, size: tuple[float, float], axes: Sequence[Axes] | None = None,
             **subplots: object) -> tuple[Figure, list[Axes]]:
    """``axes`` and their figure, or a new figure of ``n`` axes side by side, each ``size`` inches."""
    if axes is not None:
        if len(axes) != n:
            raise ValueError(f"{n} axes needed, {len(axes)} given")
        return axes[0].get_figure(), list(axes)  # type: ignore[return-value]
    fig = Figure(figsize=(size[0] * n, size[1]))
    return fig, list(fig.subplots(1, n, squeeze=False, **subplots)[0])


def plot_panels(panels: Sequence[Panel], width: float = 5.0, height: float = 4.0,
                axes: Sequence[Axes] | None = None) -> Figure:
    """``panels`` side by side (one colour per series label across panels), on ``axes`` if given."""
    fig, axes = new_axes(len(panels), (width, height), axes)
    colours: dict[str, str] = {}
    for ax, panel in zip(axes, panels, strict=True):
        for s in panel.series:
            colour = colours.setdefault(s.label, f"C{len(colours) % 10}")
            x, y = np.asarray(s.x, dtype=float), np.asarray(s.y, dtype=float)
            ax.plot(x, y, marker="o", color=colour, label=s.label)
            if s.spread is not None:
                spread = np.asarray(s.spread, dtype=float)
                ax.fill_between(x, y - spread, y + spread, color=colour, alpha=0.2, linewidth=0)
                if len(x) == 1:  # a band of one point has no width: an error bar shows it
                    ax.errorbar(x, y, yerr=spread, color=colour, capsize=4, linewidth=1)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="gray", linestyle=":", linewidth=1, label=panel.hline_label)
        if panel.marker is not None:
            ax.axvline(panel.marker[0], color="gray", linestyle=":", linewidth=1)
            ax.text(panel.marker[0], 0.02, f" {panel.marker[1]}", rotation=90, transform=ax.get_xaxis_transform(),
                    ha="right", va="bottom", fontsize=8, color="gray")
        if panel.band and any(s.spread is not None and np.isfinite(np.asarray(s.spread, dtype=float)).any()
                              for s in panel.series):
            ax.fill_between([], [], [], color="gray", alpha=0.2, linewidth=0, label=f"band: {panel.band}")
        if panel.xlim is not None:
            ax.set_xlim(*panel.xlim)
        if panel.log_x:
            ax.set_xscale("symlog", linthresh=0.5)
        if panel.xticks is not None:
            ax.set_xticks(list(panel.xticks))
            if panel.xticklabels is not None:
                ax.set_xticklabels(list(panel.xticklabels), fontsize=8)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
