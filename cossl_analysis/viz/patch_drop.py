"""Patch dropping: cosine to the intact global representation, and probe accuracy, against the
fraction of local representations actually dropped (k / P)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cossl_analysis.analyses.patch_drop import PatchDropResult
from cossl_analysis.viz.panels import Panel, Series, plot_panels

__all__ = ["drop_panels", "dropped_axis", "plot_patch_drop"]


def dropped_axis(result: PatchDropResult) -> tuple[list[float], list[str]]:
    """Ticks of the honest x axis: the fractions dropped (k / P), "(all but one)" after the one
    that keeps a single position."""
    x = list(result.fraction_dropped)
    names = [f"{v:.2g}" + (" (all but one)" if last else "") for v, last in zip(x, result.all_but_one, strict=True)]
    return x, names


def drop_panels(curves: Mapping[str, PatchDropResult], spreads: Mapping[str, PatchDropResult] | None = None,
                spread_name: str = "std over images", chance: float | None = None) -> list[Panel]:
    """Cosine (and accuracy, where present) against the fraction dropped, one curve per label;
    ``spreads`` holds the bands to draw in the same form (default: the std over images); ``chance``
    (%) is a dotted line on the accuracy panel."""
    x, names = dropped_axis(next(iter(curves.values())))
    how = sorted({r.mode if r.mode == "random" else f"position/{r.order}" for r in curves.values()})
    xlabel = f"fraction of local representations dropped, k / P ({', '.join(how)})"
    last = [(v, "all but one") for v, n in zip(x, names, strict=True) if n.endswith("(all but one)")]
    cosine = Panel("cosine to the intact global representation", xlabel, "cosine", marker=last[0] if last else None,
                   band=spread_name)
    accuracy = Panel("linear-probe accuracy", xlabel, "top-1 accuracy (%)", marker=cosine.marker, hline=chance,
                     band=spread_name if spreads is not None else "")
    for label, r in curves.items():
        spread = spreads[label] if spreads is not None else None
        cosine.series.append(Series(label, r.fraction_dropped, r.cosine_mean,
                                    spread.cosine_mean if spread is not None else r.cosine_std))
        if r.accuracy is not None:
            acc_spread = None if spread is None or spread.accuracy is None else 100 * np.asarray(spread.accuracy)
            accuracy.series.append(Series(label, r.fraction_dropped, 100 * np.asarray(r.accuracy), acc_spread))
    return [cosine, accuracy] if accuracy.series else [cosine]


def plot_patch_drop(results: Mapping[str, PatchDropResult], spreads: Mapping[str, PatchDropResult] | None = None,
                    spread_name: str = "std over images", axes: Sequence[Axes] | None = None,
                    chance: float | None = None) -> Figure:
    """The panels of :func:`drop_panels`, side by side."""
    return plot_panels(drop_panels(results, spreads, spread_name, chance), axes=axes)
