"""Robustness: accuracy per corruption (the groups side by side), accuracy against corruption
severity and against the adversarial budget, from result objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cossl_analysis.analyses.adversarial import AdversarialResult
from cossl_analysis.analyses.corruption import COMMON_CORRUPTIONS, CorruptionResult
from cossl_analysis.viz.panels import Panel, Series, new_axes, plot_panels

__all__ = ["plot_adversarial", "plot_corruption", "plot_corruption_bars"]

T = TypeVar("T")


def plot_corruption_bars(names: Sequence[str], values: Mapping[str, Sequence[float]], chance: float,
                         ax: Axes | None = None, errors: Mapping[str, Sequence[float]] | None = None,
                         title: str = "") -> Figure:
    """Horizontal bars: one row per corruption (canonical order from the top), one bar per group;
    ``errors`` (label -> per corruption): error bars (the std over seeds), for the groups that have them."""
    fig, (ax,) = new_axes(1, (7, max(3.5, 0.3 * len(names) + 1.5)), None if ax is None else [ax])
    height = 0.8 / len(values)
    y = np.arange(len(names))
    for k, (g, v) in enumerate(values.items()):
        err = None if errors is None or g not in errors else errors[g]
        ax.barh(y + (k - (len(values) - 1) / 2) * height, v, height=height, color=f"C{k % 10}", label=g,
                xerr=err, error_kw={"capsize": 3, "elinewidth": 1})
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(chance, color="gray", linestyle=":", linewidth=1, label="chance")
    ax.set_xlabel("top-1 accuracy (%)" + ("; error bars: std over seeds" if errors else ""))
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _labelled(result: T | Mapping[str, T], kind: type[T]) -> dict[str, T]:
    """One result (labelled ``model``) or label -> result."""
    return {"model": result} if isinstance(result, kind) else dict(result)  # type: ignore[arg-type]


def plot_corruption(results: CorruptionResult | Mapping[str, CorruptionResult], ax: Axes | None = None,
                    chance: float | None = None) -> Figure:
    """Top-1 (%) against severity (0 = clean), one curve per result: the mean over the ImageNet-C
    corruptions swept (``by_severity``); ``chance`` (%) as a dotted line."""
    items = _labelled(results, CorruptionResult)
    names = {n for r in items.values() for n in r.corruption}
    common = [n for n in COMMON_CORRUPTIONS if n in names]
    panel = Panel(f"mean over {len(common)} ImageNet-C corruptions" if common else "mean over the extra corruptions",
                  "severity (0 = clean)", "top-1 accuracy (%)", hline=chance)
    for label, r in items.items():
        sev = sorted(r.by_severity)
        panel.series.append(Series(label, [0, *sev], [100 * r.clean, *[100 * r.by_severity[s] for s in sev]]))
    panel.xticks = [0, *sorted({s for r in items.values() for s in r.by_severity})]
    return plot_panels([panel], axes=None if ax is None else [ax])


def plot_adversarial(results: AdversarialResult | Mapping[str, AdversarialResult], axes: Sequence[Axes] | None = None,
                     chance: float | None = None) -> Figure:
    """Top-1 (%) against the budget (/255, 0 = clean), one panel per attack, one curve per result."""
    items = _labelled(results, AdversarialResult)
    attacks = list(dict.fromkeys(a for r in items.values() for a in r.accuracy))
    panels = []
    for attack in attacks:
        panel = Panel(attack.upper() + " (L-inf)", "budget eps (/255; 0 = clean)", "top-1 accuracy (%)", hline=chance)
        for label, r in items.items():
            if attack in r.accuracy:
                points = {0.0: r.clean, **dict(zip(r.eps_255, r.accuracy[attack], strict=True))}
                x = sorted(points)
                panel.series.append(Series(label, x, [100 * points[e] for e in x]))
        panels.append(panel)
    return plot_panels(panels, axes=axes)
