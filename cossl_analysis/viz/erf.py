"""Figure 4: effective receptive fields overlaid on their images; and their means per group."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["normalised_maps", "per_image_maps", "plot_erf", "plot_erf_comparison", "plot_erf_means"]

Position = tuple[float, float]


def normalised_maps(maps: np.ndarray) -> np.ndarray:
    """(B, P, H, W) maps each divided by its own maximum: magnitudes differ a lot between positions
    and models, and the figures are about shape and extent."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.reshape(*maps.shape[:2], -1).max(axis=2)
    return np.ascontiguousarray(maps / np.where(peak > 0, peak, 1.0)[:, :, None, None])


def per_image_maps(images: Tensor | np.ndarray, maps: np.ndarray) -> np.ndarray:
    """(B, P, H, W) maps of the B images: averaged (P, H, W) maps are repeated for every image."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 3:
        maps = np.broadcast_to(maps, (len(images), *maps.shape))
    if maps.ndim != 4 or maps.shape[0] != len(images) or maps.shape[2:] != tuple(images.shape[2:]):
        raise ValueError(f"maps {maps.shape} do not match images {tuple(images.shape)}")
    return maps


def _hwc(images: Tensor | np.ndarray) -> np.ndarray:
    arr = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    return np.clip(arr.transpose(0, 2, 3, 1).astype(np.float32), 0.0, 1.0)


def _grid(rows: int, cols: int, size: tuple[float, float], axes: Sequence[Axes] | None) -> tuple[Figure, np.ndarray]:
    """``axes`` (rows * cols of them, row by row) as a grid and their figure, or a new figure's grid."""
    if axes is None:
        fig = Figure(figsize=size)
        return fig, fig.subplots(rows, cols, squeeze=False)
    if len(axes) != rows * cols:
        raise ValueError(f"{rows * cols} axes needed ({rows} rows x {cols} columns), {len(axes)} given")
    return axes[0].get_figure(), np.array(list(axes), dtype=object).reshape(rows, cols)  # type: ignore[return-value]


def plot_erf_comparison(images: Tensor | Mapping[str, Tensor], maps: Mapping[str, np.ndarray],
                        positions: Sequence[Position],
                        centres: Mapping[str, Sequence[tuple[float, float]]] | None = None, alpha: float = 0.65,
                        cmap: str = "inferno", axes: Sequence[Axes] | None = None) -> Figure:
    """Figure 4: for each image, one row per model; column 0 the image, then the ERFs at
    ``positions`` (each scaled to its maximum) over it.

    Args:
        images: (B, 3, H, W) images in [0, 1] shared by all models, or label -> images per model.
        maps: label -> (B, P, H, W) per-image maps (``erf_map(..., average=False)``).
        positions: the P normalised positions, for the column titles.
        centres: label -> P (row, col) pixel centres of the theoretical RFs (``rf_centres``),
            drawn as small crosses.
        axes: B * labels rows x (P + 1) columns of axes to draw on, row by row (default: a new figure).
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
    fig, axes = _grid(n_rows, n_pos + 1, (1.9 * (n_pos + 1) + 0.4, 1.9 * n_rows + 0.4), axes)
    for b in range(n_img_):
        for k, lab in enumerate(labels):
            r = b * len(labels) + k
            img = per_model[lab]
            shown = normalised_maps(np.asarray(maps[lab][b : b + 1]))[0]
            axes[r, 0].imshow(img[b])
            axes[r, 0].set_ylabel(f"image {b + 1}\n{lab}", fontsize=9)
            gray = img[b].mean(axis=2)  # a grey background keeps the colormap readable
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
    cross = "; +: centre of the theoretical receptive field" if centres else ""
    title = (f"ERF of the local representation at each normalised position (row, col), over the grey image; "
             f"each map scaled to its own maximum{cross}")
    fig.suptitle(textwrap.fill(title, int(12 * fig.get_figwidth())), fontsize=9)
    fig.tight_layout()
    return fig


def plot_erf(images: Tensor | np.ndarray, maps: np.ndarray, positions: Sequence[Position],
             axes: Sequence[Axes] | None = None) -> Figure:
    """One model's ERFs over its images: per-image (B, P, H, W) maps, or (P, H, W) averaged ones
    drawn over every image (``axes``: B x (P + 1), row by row)."""
    import torch

    images = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
    return plot_erf_comparison(images, {"": per_image_maps(images, maps)}, positions, axes=axes)


def plot_erf_means(means: Mapping[str, np.ndarray], positions: Sequence[Position],
                   axes: Sequence[Axes] | None = None) -> Figure:
    """One row per group, one column per position: the image-averaged (P, H, W) ERFs, each scaled to
    its max (``axes``: groups x positions, row by row)."""
    fig, axes = _grid(len(means), len(positions), (2.2 * len(positions) + 0.6, 2.2 * len(means)), axes)
    for r, (label, maps) in enumerate(means.items()):
        for c, pos in enumerate(positions):
            peak = float(maps[c].max())
            axes[r, c].imshow(maps[c] / peak if peak > 0 else maps[c], cmap="inferno", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(f"({pos[0]:g}, {pos[1]:g})", fontsize=9)
            if c == 0:
                axes[r, c].set_ylabel(label, fontsize=9)
    title = ("effective receptive fields at each normalised position (row, col), averaged; each map scaled to its "
             "maximum")
    fig.suptitle(textwrap.fill(title, int(11 * fig.get_figwidth())), fontsize=10)
    fig.tight_layout()
    return fig
