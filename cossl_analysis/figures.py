"""Layouts of the paper's Figures 3, 4 and 5, as called by ``notebooks/figure3.ipynb`` and ``figure4.ipynb``.

The notebooks only gather inputs (a results table, checkpoints, images) and call these functions, so
the plotting logic is importable and tested (``tests/test_figures.py``) rather than living in cells.

* Figure 3A / Figure 5: :func:`read_results` reads the results table that ``python -m cossl_train.grid``
  writes (columns :data:`RESULT_COLUMNS`); :func:`plot_accuracy_vs_rf` draws accuracy against RF size,
  one curve per c_min, with the base-method ResNet-50 references; :func:`plot_accuracy_vs_cmin` draws the
  same numbers against c_min, one curve per RF (Figure 5's view); :func:`curve_rows` gives the plotted
  numbers as rows for a CSV.
* Figure 3B: :func:`plot_similarity_panels` (from ``cossl_analysis.similarity``) draws one local/global
  similarity scatter per model, side by side, with the Pearson C and the intra-image line.
* Figure 4: :func:`load_images` reads image files or scikit-image sample photos at a model's resolution,
  :func:`rf_centres` locates local representations in the image, :func:`erf_stats` summarises a map,
  and :func:`plot_erf_comparison` lays out the ERFs of several models: one row per (image, model), one
  column per position.

Every ``plot_*`` function returns a matplotlib ``Figure`` built without pyplot (no GUI backend or global
state needed) and saves it as a PNG when given a path.
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from cossl_analysis.loading import method_label
from cossl_analysis.similarity import plot_similarity_panels
from cossl_train.config import Config

__all__ = [
    "METRICS", "RESULT_COLUMNS", "ResultRow", "backbone_label", "curve_rows", "erf_stats", "grid_method", "load_images",
    "method_label", "plot_accuracy_vs_cmin", "plot_accuracy_vs_rf", "plot_erf_comparison", "plot_similarity_panels",
    "read_results", "rf_centres", "split_results",
]

#: columns of the grid's results table (``cossl_train.grid.CSV_COLUMNS``), in order
RESULT_COLUMNS: tuple[str, ...] = (
    "method", "backbone", "rf", "c_min", "epochs", "linear_top1", "linear_top5", "knn_top1", "checkpoint",
)
#: accuracy columns of the results table and their axis labels
METRICS: dict[str, str] = {
    "linear_top1": "linear probe top-1 (%)",
    "linear_top5": "linear probe top-5 (%)",
    "knn_top1": "kNN top-1 (%)",
}
#: prefix of scikit-image sample photos in :func:`load_images` (``"skimage:astronaut"``)
SKIMAGE_PREFIX = "skimage:"

Position = tuple[float, float]


# --------------------------------------------------------------------------------------------
# Figure 3A / Figure 5: the results table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultRow:
    """One evaluated pre-training run of the results table (accuracies in %, NaN when missing)."""

    method: str
    backbone: str
    rf: int
    c_min: float
    epochs: int
    linear_top1: float
    linear_top5: float
    knn_top1: float
    checkpoint: str

    def metric(self, name: str) -> float:
        """The accuracy column ``name`` (one of :data:`METRICS`)."""
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; one of {', '.join(METRICS)}")
        return float(getattr(self, name))


def _float(text: str) -> float:
    # An empty cell (a metric that was not computed) reads as NaN and is left out of the plots.
    return float(text) if text.strip() else math.nan


def read_results(path: str | Path) -> list[ResultRow]:
    """Rows of a results table written by ``python -m cossl_train.grid --run/--collect``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a column of :data:`RESULT_COLUMNS` is missing, a cell does not parse, or the
            table has no rows (message names the file).
    """
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in RESULT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a grid results table, missing column(s) {', '.join(missing)}")
        rows = []
        for line, rec in enumerate(reader, start=2):
            try:
                rows.append(ResultRow(
                    method=rec["method"], backbone=rec["backbone"], rf=int(rec["rf"]), c_min=float(rec["c_min"]),
                    epochs=int(rec["epochs"]), linear_top1=_float(rec["linear_top1"]),
                    linear_top5=_float(rec["linear_top5"]), knn_top1=_float(rec["knn_top1"]),
                    checkpoint=rec["checkpoint"],
                ))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {line}: {e}") from None
    if not rows:
        raise ValueError(f"{path}: the results table has no rows (no evaluated cell yet)")
    return rows


def grid_method(rows: Sequence[ResultRow]) -> str:
    """The method of the grid's cells: the CO method with the most rows (the base-method rows are the
    references), or the most frequent method when no method is a CO method."""
    counts = Counter(r.method for r in rows)
    co = {m: n for m, n in counts.items() if m.startswith("co_")}
    pool = co or counts
    # Ties go to the name that sorts first, so the choice does not depend on row order.
    return min(pool, key=lambda m: (-pool[m], m))


def split_results(rows: Sequence[ResultRow], method: str | None = None) -> tuple[list[ResultRow], list[ResultRow]]:
    """(grid rows of ``method``, reference rows of every other method); ``method`` defaults to
    :func:`grid_method`."""
    method = method or grid_method(rows)
    grid = [r for r in rows if r.method == method]
    if not grid:
        raise ValueError(f"no row of method {method!r}; the table has {', '.join(sorted({r.method for r in rows}))}")
    return grid, [r for r in rows if r.method != method]


def backbone_label(name: str) -> str:
    """Short display name of a backbone: ``rf_resnet50_rf43`` -> ``RF-ResNet50 (rf43)``."""
    if name.startswith("rf_resnet50_"):
        return f"RF-ResNet50 ({name.rsplit('_', 1)[1]})"
    return {"resnet50": "ResNet-50", "resnet18": "ResNet-18", "bagnet33": "BagNet-33"}.get(name, name)


def _means(rows: Sequence[ResultRow], metric: str, key: str) -> dict[tuple[Any, float], tuple[float, int]]:
    """Mean ``metric`` (and its row count) per (``key`` value, c_min); repeated runs (seeds) average.

    NaN values (metrics that were not computed) are left out; a group with none left is dropped.
    """
    groups: dict[tuple[Any, float], list[float]] = defaultdict(list)
    for r in rows:
        v = r.metric(metric)
        if not math.isnan(v):
            groups[(getattr(r, key), r.c_min)].append(v)
    return {k: (float(np.mean(v)), len(v)) for k, v in groups.items()}


def curve_rows(
    rows: Sequence[ResultRow], metric: str = "linear_top1", method: str | None = None
) -> list[dict[str, Any]]:
    """The numbers plotted by :func:`plot_accuracy_vs_rf` and :func:`plot_accuracy_vs_cmin`, one row per
    point: role (``grid`` or ``reference``), method, backbone, rf, c_min, the metric (mean over
    repeated runs) and ``n_runs``, sorted by role, c_min and rf."""
    grid, refs = split_results(rows, method)
    out = []
    for role, part in (("grid", grid), ("reference", refs)):
        rf_of = {(r.method, r.backbone): r.rf for r in part}
        for method_name in sorted({r.method for r in part}):
            mine = [r for r in part if r.method == method_name]
            for (backbone, c_min), (value, n) in _means(mine, metric, "backbone").items():
                out.append({"role": role, "method": method_name, "backbone": backbone,
                            "rf": rf_of[(method_name, backbone)], "c_min": c_min, metric: value, "n_runs": n})
    out.sort(key=lambda d: (d["role"] != "grid", d["method"], d["c_min"], d["rf"], d["backbone"]))
    return out


def _cmin_colors(c_mins: Sequence[float]) -> dict[float, Any]:
    """One colour per c_min along a sequential colormap (small crops dark, large crops light), so
    the order of the curves reads off the colours as in the paper's figure."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    ordered = sorted(set(c_mins))
    n = max(len(ordered) - 1, 1)
    return {c: cmap(0.85 * k / n) for k, c in enumerate(ordered)}


def _save(fig: Figure, path: str | Path | None, dpi: int = 120) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(), ax  # type: ignore[return-value]
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def plot_accuracy_vs_rf(
    rows: Sequence[ResultRow],
    path: str | Path | None = None,
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
    grid_means = _means(grid, metric, "rf")
    for c in c_mins:
        pts = sorted((rf, v) for (rf, cc), (v, _) in grid_means.items() if cc == c)
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", color=colors[c], label=f"{method_label(method)}, $c_{{min}}$={c:g}")
    ref_styles = ["--", ":", "-."]
    for k, ref_method in enumerate(sorted({r.method for r in refs})):
        mine = [r for r in refs if r.method == ref_method]
        for (backbone, c), (v, _) in sorted(_means(mine, metric, "backbone").items()):
            ax.axhline(v, color=colors[c], linestyle=ref_styles[k % len(ref_styles)], linewidth=1.2,
                       label=f"{method_label(ref_method)} {backbone_label(backbone)}, $c_{{min}}$={c:g}")
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
    _save(fig, path)
    return fig


def plot_accuracy_vs_cmin(rows: Sequence[ResultRow], path: str | Path | None = None, metric: str = "linear_top1",
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
    grid_means = _means(grid, metric, "rf")
    for k, rf in enumerate(rfs):
        pts = sorted((c, v) for (x, c), (v, _) in grid_means.items() if x == rf)
        if not pts:  # every run of this RF lacks the metric
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", color=cmap(0.85 * k / max(len(rfs) - 1, 1)),
                label=f"{method_label(method)}, RF {rf} ({names[rf]})")
    ref_styles = ["--", ":", "-."]
    for k, key in enumerate(sorted({(r.method, r.backbone) for r in refs})):
        mine = [r for r in refs if (r.method, r.backbone) == key]
        pts = sorted((c, v) for (_, c), (v, _) in _means(mine, metric, "backbone").items())
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="s", color="black", linestyle=ref_styles[k % len(ref_styles)],
                    label=f"{method_label(key[0])} {backbone_label(key[1])}")
    ax.set_xticks(sorted({r.c_min for r in rows}))
    ax.set_xlabel("minimum crop scale $c_{min}$")
    ax.set_ylabel(METRICS[metric])
    ax.set_title(title or "accuracy against minimum crop scale (Figure 5's view)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path)
    return fig


# --------------------------------------------------------------------------------------------
# Figure 3B: local/global similarity
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Figure 4: effective receptive fields
# --------------------------------------------------------------------------------------------


def _open_image(spec: str | Path) -> Any:
    """A PIL image from a file path or ``skimage:<name>`` (a scikit-image sample photo, no download)."""
    from PIL import Image

    text = str(spec)
    if text.startswith(SKIMAGE_PREFIX):
        import skimage.data

        name = text[len(SKIMAGE_PREFIX):]
        loader = getattr(skimage.data, name, None)
        if loader is None or not callable(loader):
            raise ValueError(f"{text}: scikit-image has no sample image {name!r} (e.g. astronaut, coffee, chelsea)")
        return Image.fromarray(np.asarray(loader()))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as img:
        img.load()
        return img.copy()


def load_images(specs: Sequence[str | Path], resolution: int) -> Tensor:
    """Images as a (B, 3, R, R) float32 tensor in [0, 1], prepared like the evaluation images.

    Args:
        specs: image file paths, or ``"skimage:<name>"`` for scikit-image's bundled sample photos
            (``skimage:astronaut``, ``skimage:coffee``, ``skimage:chelsea``, ...).
        resolution: R, the model's ``augment.resolution``.

    The evaluation transform of the training core is used (resize, centre crop, grey -> RGB), so the
    model sees these images exactly as it sees its validation images.
    """
    from cossl_train.augment import EvalTransform

    if not specs:
        raise ValueError("load_images needs at least one image")
    tf = EvalTransform(resolution)
    return torch.stack([tf(_open_image(s)) for s in specs]).float() / 255.0


def rf_centres(cfg: Config, positions: Sequence[Position], input_size: int) -> list[tuple[float, float]]:
    """Input-pixel (row, col) centres of the theoretical RFs of the local representations at normalised
    ``positions``, for a checkpoint's backbone at ``input_size`` px (from the RF calculator).

    A centre can lie outside the image when padding lets the RF reach past the border; it is then
    clipped to the image, which is where the marker of :func:`plot_erf_comparison` is drawn.
    """
    from cossl_analysis.erf import position_indices
    from cossl_train.backbones import backbone_info

    info = backbone_info(cfg.backbone.name, small_image=cfg.backbone.small_image, width=cfg.backbone.width,
                         input_size=input_size)
    h = int(info["feature_size"])
    if h < 1:
        raise ValueError(f"backbone {cfg.backbone.name} gives no feature map at {input_size} px")

    def centre(i: int) -> float:
        return float(np.clip(info["start"] + i * info["jump"] + (info["rf"] - 1) / 2, 0, input_size - 1))

    return [(centre(i), centre(j)) for i, j in position_indices(positions, h, h)]


def erf_stats(erf: np.ndarray) -> dict[str, Any]:
    """Scalar summary of one ERF map (H, W): total and peak gradient, centroid (row, col) and RMS
    radius in pixels (square root of the gradient-weighted mean squared distance to the centroid), and
    ``area90``, the fraction of pixels that hold 90% of the gradient mass. The last two compare ERF
    sizes between models with one number each; None where the map is all zero."""
    m = np.asarray(erf, dtype=np.float64)
    total = float(m.sum())
    if total <= 0:
        return {"total": total, "peak": 0.0, "centroid": None, "rms_radius": None, "area90": None}
    w = m / total
    rows, cols = np.indices(m.shape, dtype=np.float64)
    cr, cc = float((w * rows).sum()), float((w * cols).sum())
    radius = math.sqrt(float((w * ((rows - cr) ** 2 + (cols - cc) ** 2)).sum()))
    mass = np.cumsum(np.sort(w.ravel())[::-1])
    area90 = (int(np.searchsorted(mass, 0.9)) + 1) / m.size
    return {"total": total, "peak": float(m.max()), "centroid": [cr, cc], "rms_radius": radius,
            "area90": float(min(area90, 1.0))}


def _hwc(images: Tensor | np.ndarray) -> np.ndarray:
    arr = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    return np.clip(arr.transpose(0, 2, 3, 1).astype(np.float32), 0.0, 1.0)


def plot_erf_comparison(
    images: Tensor | Mapping[str, Tensor],
    maps: Mapping[str, np.ndarray],
    positions: Sequence[Position],
    path: str | Path | None = None,
    centres: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    alpha: float = 0.65,
    cmap: str = "inferno",
) -> Figure:
    """Figure 4: ERFs of the same positions for several models, overlaid on the images.

    Layout: for each image, one row per model (rows grouped by image); column 0 shows the image, the
    next columns the ERFs at ``positions`` from left to right, as in the paper. Each map is divided
    by its own maximum: magnitudes differ a lot between positions and models, the figure is about
    shape and extent.

    Args:
        images: (B, 3, H, W) images in [0, 1] shared by all models, or label -> images per model (when
            the models differ in resolution).
        maps: label -> (B, P, H, W) per-image maps (``erf_map(..., average=False)``).
        positions: the P normalised (row, col) positions, for the column titles.
        path: where to save the PNG.
        centres: label -> P (row, col) pixel centres of the theoretical RFs (:func:`rf_centres`), drawn
            as small crosses; None draws none.
    """
    labels = list(maps)
    if not labels:
        raise ValueError("plot_erf_comparison needs the maps of at least one model")
    per_model = {lab: _hwc(images[lab] if isinstance(images, Mapping) else images) for lab in labels}
    n_img = {len(v) for v in per_model.values()}
    n_pos = len(positions)
    for lab in labels:
        m = np.asarray(maps[lab])
        img = per_model[lab]
        if m.ndim != 4 or m.shape[0] != len(img) or m.shape[1] != n_pos or m.shape[2:] != img.shape[1:3]:
            raise ValueError(f"{lab}: maps {m.shape} do not match {len(img)} images of {img.shape[1:3]} "
                             f"and {n_pos} positions")
    if len(n_img) != 1:
        raise ValueError(f"every model needs the same number of images, got {sorted(n_img)}")
    n_img_ = n_img.pop()
    n_rows = n_img_ * len(labels)
    fig = Figure(figsize=(1.9 * (n_pos + 1) + 0.4, 1.9 * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_pos + 1, squeeze=False)
    for b in range(n_img_):
        for k, lab in enumerate(labels):
            r = b * len(labels) + k
            img = per_model[lab][b]
            m = np.asarray(maps[lab][b], dtype=np.float32)
            peak = m.reshape(n_pos, -1).max(axis=1)
            shown = m / np.where(peak > 0, peak, 1.0)[:, None, None]
            axes[r, 0].imshow(img)
            axes[r, 0].set_ylabel(f"image {b + 1}\n{lab}", fontsize=9)
            gray = img.mean(axis=2)  # a grey background keeps the colormap readable
            for p in range(n_pos):
                ax = axes[r, p + 1]
                ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
                ax.imshow(shown[p], cmap=cmap, alpha=alpha, vmin=0, vmax=1)
                if centres is not None and lab in centres:
                    cy, cx = centres[lab][p]
                    ax.plot([cx], [cy], marker="+", color="cyan", markersize=8, markeredgewidth=1.5)
                if r == 0:
                    ax.set_title(f"({positions[p][0]:g}, {positions[p][1]:g})", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=100)
    return fig
