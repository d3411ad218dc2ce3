"""Figures 3A and 5: accuracy against receptive-field size (one curve per c_min) and against
c_min (one curve per RF), from the grid's results table (``cossl_train.experiments.results``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cossl_analysis.viz.panels import new_axes
from cossl_train.experiments.results import METRICS, ResultRow, group_means, split_results
from cossl_train.methods import display_name

__all__ = ["backbone_label", "plot_accuracy_vs_cmin", "plot_accuracy_vs_rf"]


def backbone_label(name: str) -> str:
    """Short display name of a backbone: ``rf_resnet50_rf43`` -> ``RF-ResNet50 (rf43)``."""
    if name.startswith("rf_resnet50_"):
        return f"RF-ResNet50 ({name.rsplit('_', 1)[1]})"
    return {"resnet50": "ResNet-50", "resnet18": "ResNet-18", "bagnet33": "BagNet-33"}.get(name, name)


def _cmin_colors(c_mins: Sequence[float]) -> dict[float, Any]:
    """One colour per c_min along a sequential colormap (small crops dark, large crops light), so
    the order of the curves reads off the colours as in the paper's figure."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    ordered = sorted(set(c_mins))
    n = max(len(ordered) - 1, 1)
    return {c: cmap(0.85 * k / n) for k, c in enumerate(ordered)}


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    fig, (ax,) = new_axes(1, figsize, None if ax is None else [ax])
    return fig, ax


def plot_accuracy_vs_rf(
    rows: Sequence[ResultRow],
    metric: str = "linear_top1",
    method: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Figure 3A: accuracy against receptive-field size (log axis), one curve per c_min.

    Grid rows (``method``, default :func:`grid_method`) make the curves, their RF values read from the
    table's ``rf`` column (ticks at every RF present). Rows of other methods are references (the paper's
    "BYOL with ResNet-50"): each reference run is drawn as a dashed horizontal line in the colour of its
    c_min, so that it compares with the curve of the same crops. Repeated runs are averaged.
    """
    grid, refs = split_results(rows, method)
    method = grid[0].method
    c_mins = sorted({r.c_min for r in rows})
    colors = _cmin_colors(c_mins)
    fig, ax = _new_axes(ax, (6.0, 4.2))
    grid_means = group_means(grid, metric, "rf")
    for c in c_mins:
        pts = sorted((rf, v) for (rf, cc), (v, _) in grid_means.items() if cc == c)
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", color=colors[c], label=f"{display_name(method)}, $c_{{min}}$={c:g}")
    ref_styles = ["--", ":", "-."]
    for k, ref_method in enumerate(sorted({r.method for r in refs})):
        mine = [r for r in refs if r.method == ref_method]
        for (backbone, c), (v, _) in sorted(group_means(mine, metric, "backbone").items()):
            ax.axhline(v, color=colors[c], linestyle=ref_styles[k % len(ref_styles)], linewidth=1.2,
                       label=f"{display_name(ref_method)} {backbone_label(backbone)}, $c_{{min}}$={c:g}")
    rfs = sorted({r.rf for r in grid})
    ax.set_xscale("log")
    ax.set_xticks(rfs)
    ax.set_xticklabels([str(v) for v in rfs])
    ax.minorticks_off()  # log-scale minor ticks would bring unlabelled clutter between the RF ticks
    ax.set_xlabel("receptive field size (pixels, log scale)")
    ax.set_ylabel(METRICS[metric])
    ax.set_title(title or "A) accuracy against receptive-field size", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=1 if len(c_mins) * (1 + bool(refs)) <= 6 else 2, loc="best")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_cmin(rows: Sequence[ResultRow], metric: str = "linear_top1",
                          method: str | None = None, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Figure 5: the same numbers against c_min, one curve per RF size of the grid, and one dashed
    black curve per reference method and backbone (BYOL ResNet-50 in the paper)."""
    grid, refs = split_results(rows, method)
    method = grid[0].method
    fig, ax = _new_axes(ax, (6.0, 4.2))
    rfs = sorted({r.rf for r in grid})
    from matplotlib import colormaps

    cmap = colormaps["plasma"]
    names = {r.rf: r.backbone for r in grid}
    grid_means = group_means(grid, metric, "rf")
    for k, rf in enumerate(rfs):
        pts = sorted((c, v) for (x, c), (v, _) in grid_means.items() if x == rf)
        if not pts:  # every run of this RF lacks the metric
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", color=cmap(0.85 * k / max(len(rfs) - 1, 1)),
                label=f"{display_name(method)}, RF {rf} ({names[rf]})")
    ref_styles = ["--", ":", "-."]
    for k, key in enumerate(sorted({(r.method, r.backbone) for r in refs})):
        mine = [r for r in refs if (r.method, r.backbone) == key]
        pts = sorted((c, v) for (_, c), (v, _) in group_means(mine, metric, "backbone").items())
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="s", color="black", linestyle=ref_styles[k % len(ref_styles)],
                    label=f"{display_name(key[0])} {backbone_label(key[1])}")
    ax.set_xticks(sorted({r.c_min for r in rows}))
    ax.set_xlabel("minimum crop scale $c_{min}$")
    ax.set_ylabel(METRICS[metric])
    ax.set_title(title or "accuracy against minimum crop scale (Figure 5's view)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
