"""Effective receptive fields of local representations (Luo et al. 2016; paper Figure 4).

Definition used here. For a model f mapping images x (B, 3, H, W) in [0, 1] to a feature map
z = f(x) (B, C, h, w), the ERF of the local representation at feature-map index (i, j) of image x is

    ERF_ij(x)[u, v] = sum_c | d( sum_k z[k, i, j] ) / d x[c, u, v] |

i.e. the gradient of the *channel sum* of the feature vector at (i, j) with respect to the input
pixels, in absolute value, summed over the 3 input channels. The channel sum is Luo et al.'s recipe
(back-propagate a gradient of 1 at the chosen output location, 0 elsewhere); it equals the gradient of
<1, z[:, i, j]>. With ``average=True`` the maps are averaged over the images (mean of absolute values,
so signs never cancel across images). Gradients are taken w.r.t. [0, 1] pixels, so an ``Encoder``'s
internal normalisation is part of the network being analysed.

Positions are normalised feature-map coordinates (row, col) in [0, 1], as in Figure 4's
(0, 0), (0, 0.5), (0.5, 0), (0.5, 0.5): coordinate p on an axis of size n maps to the index
floor(p * (n - 1) + 0.5) (round half up, not Python's banker's rounding, so that 0.5 on an even-sized
axis deterministically picks the lower-right of the two central cells). On a 7x7 map, 0.5 -> 3.

Batching. Each (image, position) pair needs its own backward pass because the selected outputs differ.
Rather than one captum call per position, the (image, position) pairs are laid out as one virtual
batch of B * P copies (copy k = b * P + p is image b with target position p) and cut into chunks of
``chunk_size`` copies; each chunk is one forward and one backward through captum's ``Saliency``.
Copies are gathered chunk by chunk, so the B * P replicated batch is never materialised. The model is
put in eval mode for the computation (restored afterwards): in train mode a BatchNorm would couple the
copies of a batch and make a copy's gradient depend on the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from captum.attr import Saliency
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis._utils import check_fmap, eval_mode, model_device, model_dtype, sibling, write_json

Position = tuple[float, float]
DEFAULT_POSITIONS: tuple[Position, ...] = ((0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5))


def position_index(p: float, size: int) -> int:
    """Normalised coordinate p in [0, 1] on an axis of ``size`` cells -> index floor(p*(size-1)+0.5)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"normalised position {p} is outside [0, 1]")
    return int(math.floor(p * (size - 1) + 0.5))


def position_indices(positions: Sequence[Position], h: int, w: int) -> list[tuple[int, int]]:
    """Normalised (row, col) positions -> integer (i, j) indices on an h x w feature map."""
    return [(position_index(r, h), position_index(c, w)) for r, c in positions]


class _ChannelSumMap(nn.Module):
    """Wraps the model so captum sees a 2-D output: (N, 3, H, W) -> (N, h*w) channel-summed map.

    A flat 2-D output lets captum select one (per-example) target index with a gather, which is
    captum's most robust target format.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return check_fmap(self.model(x)).sum(dim=1).flatten(1)


def erf_map(
    model: nn.Module,
    images: Tensor,
    positions: Sequence[Position] = DEFAULT_POSITIONS,
    average: bool = True,
    batch_positions: bool = True,
    chunk_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Effective receptive fields of the local representations at ``positions``.

    Args:
        model: any module mapping (N, 3, H, W) images to an (N, C, h, w) feature map.
        images: (B, 3, H, W) input images (pixel space, [0, 1] for an ``Encoder``).
        positions: P normalised (row, col) feature-map coordinates in [0, 1] (see module docstring).
        average: average the maps over the B images.
        batch_positions: lay out all (image, position) pairs as one batch of B*P copies cut into
            chunks (default, fewer and larger passes); False runs one captum call per position over
            the images (chunked too), which is the slow reference path.
        chunk_size: most copies per forward/backward pass; bounds memory.
        progress: show a tqdm bar over the passes.

    Returns:
        float32 array (P, H, W) if ``average`` else (B, P, H, W): |d sum_c z[c, i, j] / dx| summed over
        input channels, in the units of the raw gradient (no normalisation).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if len(positions) == 0 or len(images) == 0:
        raise ValueError("erf_map needs at least one image and one position")
    device = model_device(model)
    x = images.detach().to(device=device, dtype=model_dtype(model))
    n_img, _, height, width = x.shape
    n_pos = len(positions)

    with eval_mode(model):
        with torch.no_grad():
            _, _, h, w = check_fmap(model(x[:1])).shape
        flat = torch.tensor([i * w + j for i, j in position_indices(positions, h, w)], device=device)
        saliency = Saliency(_ChannelSumMap(model))

        # (B, P, H, W) per-copy maps, or their running sum over images when averaging.
        shape = (n_pos, height, width) if average else (n_img, n_pos, height, width)
        out = torch.zeros(shape, dtype=torch.float64, device=device)

        def run(img_idx: Tensor, pos_idx: Tensor) -> None:
            # The gathered copies are a fresh leaf; asking for its gradient up front spares captum's warning.
            inp = x[img_idx].requires_grad_()
            attr = saliency.attribute(inp, target=flat[pos_idx], abs=True)
            maps = attr.sum(dim=1).to(torch.float64)  # sum |grad| over the input channels
            if average:
                out.index_add_(0, pos_idx, maps)
            else:
                out[img_idx, pos_idx] = maps

        if batch_positions:
            # Copy k = b * P + p: image b with target position p.
            img_of = torch.arange(n_img, device=device).repeat_interleave(n_pos)
            pos_of = torch.arange(n_pos, device=device).repeat(n_img)
            starts = range(0, n_img * n_pos, chunk_size)
            for s in tqdm(starts, desc="erf (batched)", disable=not progress, leave=False):
                run(img_of[s : s + chunk_size], pos_of[s : s + chunk_size])
        else:
            jobs = [(p, s) for p in range(n_pos) for s in range(0, n_img, chunk_size)]
            for p, s in tqdm(jobs, desc="erf (per position)", disable=not progress, leave=False):
                img_idx = torch.arange(s, min(s + chunk_size, n_img), device=device)
                run(img_idx, torch.full_like(img_idx, p))

    if average:
        out /= n_img
    return out.to(torch.float32).cpu().numpy()


def _as_hwc(images: Tensor | np.ndarray) -> np.ndarray:
    """(B, 3, H, W) tensor/array in [0, 1] -> (B, H, W, 3) float array clipped to [0, 1] for imshow."""
    arr = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    return np.clip(arr.transpose(0, 2, 3, 1).astype(np.float32), 0.0, 1.0)


def plot_erf(
    images: Tensor | np.ndarray,
    maps: np.ndarray,
    path: str | Path,
    positions: Sequence[Position] | None = None,
    alpha: float = 0.6,
    cmap: str = "inferno",
) -> np.ndarray:
    """Overlay ERF maps on their images, save the figure as PNG and the raw maps beside it.

    Args:
        images: (B, 3, H, W) images in [0, 1].
        maps: (B, P, H, W) per-image maps from ``erf_map(average=False)``, or (P, H, W) averaged maps
            (then the same maps are drawn over every image).
        path: PNG path; the raw and normalised maps go to ``<path>.npz`` and a summary (positions,
            per-map max and total) to ``<path>.json``.
        positions: the normalised positions, for column titles.
        alpha: opacity of the map over the (grayscale) image.
        cmap: matplotlib colormap of the maps.

    Returns:
        (B, P, H, W) maps as drawn: each divided by its own maximum (so each lies in [0, 1]); ERF
        magnitudes differ a lot between positions and models, and the plot is about shape.
    """
    img = _as_hwc(images)
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 3:
        maps = np.broadcast_to(maps, (img.shape[0], *maps.shape))
    if maps.ndim != 4 or maps.shape[0] != img.shape[0] or maps.shape[2:] != img.shape[1:3]:
        raise ValueError(f"maps {maps.shape} do not match images {img.shape}")
    n_img, n_pos = maps.shape[:2]
    peak = maps.reshape(n_img, n_pos, -1).max(axis=2)
    shown = maps / np.where(peak > 0, peak, 1.0)[:, :, None, None]
    gray = img.mean(axis=3)  # grayscale background keeps the colormap readable

    # The object-oriented Figure needs no pyplot state or GUI backend (safe on headless machines).
    fig = Figure(figsize=(2.2 * (n_pos + 1), 2.2 * n_img))
    axes = fig.subplots(n_img, n_pos + 1, squeeze=False)
    for b in range(n_img):
        axes[b, 0].imshow(img[b])
        for p in range(n_pos):
            ax = axes[b, p + 1]
            ax.imshow(gray[b], cmap="gray", vmin=0, vmax=1)
            ax.imshow(shown[b, p], cmap=cmap, alpha=alpha, vmin=0, vmax=1)
            if b == 0 and positions is not None:
                ax.set_title(f"({positions[p][0]:g}, {positions[p][1]:g})", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)

    np.savez_compressed(sibling(path, ".npz"), maps=maps, normalised=shown)
    write_json(
        {
            "positions": None if positions is None else [list(p) for p in positions],
            "shape": list(maps.shape),
            "max": peak,
            "total": maps.reshape(n_img, n_pos, -1).sum(axis=2),
        },
        sibling(path, ".json"),
    )
    return np.ascontiguousarray(shown)
