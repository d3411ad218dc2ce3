"""The CO objective: per-position maps of own-image cosine and retrieval, one column per group (the
mean of its seeds' maps, the seeds named)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cossl_analysis.analyses.co_objective import ObjectiveResult
from cossl_train.paired import mean_std_text

__all__ = ["plot_objective_maps", "retrieval_scale"]

#: maps up to this side have their values written in the cells
ANNOTATE_UP_TO = 8


def retrieval_scale(maps: Sequence[np.ndarray], chance: float) -> tuple[float, float]:
    """(vmin, vmax) of the retrieval colours, in %: from chance to the largest value drawn (values
    below chance take the bottom colour); twice chance when nothing lies above it.

    >>> retrieval_scale([np.array([[1.0, 3.0]]), np.array([[5.0]])], chance=1.5)
    (1.5, 5.0)
    """
    top = max(float(np.max(m)) for m in maps)
    if top <= chance:
        top = 2 * chance if chance > 0 else 1.0
    return chance, top


def _annotate(ax: Axes, values: np.ndarray, fmt: str, norm_min: float, norm_max: float) -> None:
    """Each cell's value, in a colour that stays readable on the cell."""
    if max(values.shape) > ANNOTATE_UP_TO:
        return
    middle = (norm_min + norm_max) / 2
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                color="black" if v > middle else "white")


def plot_objective_maps(results: Mapping[str, ObjectiveResult | Sequence[ObjectiveResult]],
                        seeds: Mapping[str, Sequence[str]] | None = None,
                        axes: Sequence[Axes] | None = None) -> Figure:
    """Row 1: the mean cosine of each position's local query to its own image's global target; row 2:
    own-image retrieval per position (%). One column per label: the mean of its seeds' maps
    (``results``: label -> one result, or the results of its seeds; ``seeds``: label -> the seeds'
    names, said in the column title). The cosine scale runs from the smallest to the largest value
    drawn, the retrieval scale from chance to the largest value drawn (a 0-100 % scale would paint
    every value met in practice, a few %, the same colour); the values are written in the cells of
    maps up to 8x8. ``axes``: 2 x len(results) axes, row by row.
    """
    if not results:
        raise ValueError("plot_objective_maps needs at least one result")
    groups = {k: [v] if isinstance(v, ObjectiveResult) else list(v) for k, v in results.items()}
    n = len(groups)
    if axes is None:
        fig = Figure(figsize=(2.9 * n + 1.4, 6.0), layout="constrained")
        grid = fig.subplots(2, n, squeeze=False)
    else:
        if len(axes) != 2 * n:
            raise ValueError(f"{2 * n} axes needed, {len(axes)} given")
        fig = axes[0].get_figure()  # type: ignore[assignment]
        grid = np.array(list(axes), dtype=object).reshape(2, n)
    cos_maps = {k: np.mean([np.asarray(r.own_cosine_map, dtype=float) for r in rs], axis=0) for k, rs in groups.items()}
    ret_maps = {k: 100 * np.mean([np.asarray(r.retrieval_map, dtype=float) for r in rs], axis=0)
                for k, rs in groups.items()}
    low, high = min(float(m.min()) for m in cos_maps.values()), max(float(m.max()) for m in cos_maps.values())
    if high - low < 1e-6:
        low, high = low - 0.05, high + 0.05
    chance = 100 * max(r.chance for rs in groups.values() for r in rs)
    r_low, r_high = retrieval_scale(list(ret_maps.values()), chance)
    for k, (label, rs) in enumerate(groups.items()):
        names = list((seeds or {}).get(label, []))
        who = (f"mean of {len(rs)} seeds: {', '.join(names)}" if len(rs) > 1 and names else
               f"mean of {len(rs)} seeds" if len(rs) > 1 else names[0] if names else "")
        path = textwrap.fill(rs[0].path, 30)
        grid[0, k].set_title("\n".join(t for t in (label, path, textwrap.fill(who, 34)) if t), fontsize=8)
        top = grid[0, k].imshow(cos_maps[label], cmap="viridis", vmin=low, vmax=high)
        _annotate(grid[0, k], cos_maps[label], ".2f", low, high)
        grid[0, k].set_xlabel(f"own {mean_std_text([r.own_cosine for r in rs], 3).replace(' (n = 1)', '')}\n"
                              f"others {mean_std_text([r.other_cosine for r in rs], 3).replace(' (n = 1)', '')}",
                              fontsize=8)
        bottom = grid[1, k].imshow(ret_maps[label], cmap="magma", vmin=r_low, vmax=r_high)
        _annotate(grid[1, k], ret_maps[label], ".1f", r_low, r_high)
        retrieval = mean_std_text([100 * r.retrieval for r in rs], 1, "%").replace(" (n = 1)", "")
        grid[1, k].set_xlabel(f"{retrieval} (chance {chance:.1f}%)", fontsize=8)
        for ax in grid[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    grid[0, 0].set_ylabel("cosine to own image's target", fontsize=8)
    grid[1, 0].set_ylabel("own-image retrieval (%)", fontsize=8)
    fig.colorbar(top, ax=list(grid[0]), shrink=0.85, label="cosine (smallest to largest drawn)")
    fig.colorbar(bottom, ax=list(grid[1]), shrink=0.85, label="retrieval (%), from chance")
    return fig
