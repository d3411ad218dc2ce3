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

Computation. Each (image, position) pair needs its own gradient, but not its own forward pass: the
batched path runs one forward pass per chunk of images and gets the gradients of all P selected
outputs from it, with P backward passes vectorised into one by ``torch.autograd.grad(...,
is_grads_batched=True)`` (one-hot output selections; positions are grouped so that at most
``chunk_size`` (image, position) copies go through one backward pass). Where the backward pass cannot
run under ``vmap`` (a custom autograd Function, say), or torch would only loop over the positions
internally, the per-position path is used instead, with a warning: one captum ``Saliency`` call per
position, which is also the reference the batched path is tested against. The model is put in eval
mode for the computation (restored afterwards): in train mode a BatchNorm would couple the images
of a batch and make one image's gradient depend on the others.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from captum.attr import Saliency
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis._utils import check_fmap, eval_mode, model_device, model_dtype, sibling, write_json
from cossl_analysis.options import DEFAULT_POSITIONS

Position = tuple[float, float]
ErfMethod = Literal["auto", "batched", "per-position"]


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


class NotVectorisable(RuntimeError):
    """The model's backward pass cannot run under ``vmap`` (``is_grads_batched``)."""


def _batched_chunk(model: nn.Module, x: Tensor, flat: Tensor, group: int) -> Tensor:
    """(b, P, H, W) maps of the images ``x`` (b, 3, H, W): one forward pass, then the gradients of
    all P selected outputs from vectorised backward passes over ``group`` positions at a time."""
    inp = x.detach().clone().requires_grad_()
    selected = _ChannelSumMap(model)(inp)[:, flat]  # (b, P)
    b, n_pos = selected.shape
    maps = []
    for start in range(0, n_pos, group):
        stop = min(start + group, n_pos)
        one_hot = torch.zeros(stop - start, b, n_pos, dtype=selected.dtype, device=selected.device)
        one_hot[torch.arange(stop - start), :, torch.arange(start, stop)] = 1.0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                (grads,) = torch.autograd.grad(selected, inp, grad_outputs=one_hot, is_grads_batched=True,
                                               retain_graph=stop < n_pos)
            except RuntimeError as err:  # e.g. a custom autograd Function that vmap cannot batch
                raise NotVectorisable(str(err).splitlines()[0]) from err
        slow = [w for w in caught if "performance drop" in str(w.message)]
        if slow:  # torch fell back to a Python loop over the positions: no gain over per-position
            raise NotVectorisable(str(slow[0].message).splitlines()[0])
        maps.append(grads.abs().sum(dim=2).transpose(0, 1))  # (b, g, H, W): sum |grad| over channels
    return torch.cat(maps, dim=1)


def _per_position(model: nn.Module, x: Tensor, flat: Tensor, chunk_size: int) -> Tensor:
    """(B, P, H, W) maps with one captum ``Saliency`` call per position (chunks of images)."""
    saliency = Saliency(_ChannelSumMap(model))
    out = torch.zeros(len(x), len(flat), *x.shape[2:], dtype=torch.float64, device=x.device)
    for p in range(len(flat)):
        for s in range(0, len(x), chunk_size):
            # A fresh leaf per call; asking for its gradient up front spares captum's warning.
            inp = x[s : s + chunk_size].detach().clone().requires_grad_()
            target = flat[p].expand(len(inp))
            out[s : s + chunk_size, p] = saliency.attribute(inp, target=target, abs=True).sum(dim=1).double()
    return out


def erf_map(
    model: nn.Module,
    images: Tensor,
    positions: Sequence[Position] = DEFAULT_POSITIONS,
    average: bool = True,
    method: ErfMethod = "auto",
    chunk_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Effective receptive fields of the local representations at ``positions``.

    Args:
        model: any module mapping (N, 3, H, W) images to an (N, C, h, w) feature map.
        images: (B, 3, H, W) input images (pixel space, [0, 1] for an ``Encoder``).
        positions: P normalised (row, col) feature-map coordinates in [0, 1] (see module docstring).
        average: average the maps over the B images.
        method: ``"batched"``: one forward pass per chunk of images, every position's gradient from
            vectorised backward passes (``torch.autograd.grad(..., is_grads_batched=True)``);
            ``"per-position"``: one captum ``Saliency`` call per position (the reference path);
            ``"auto"`` (default): batched, falling back to per-position (with a warning) for a
            model whose backward pass cannot be vectorised.
        chunk_size: most (image, position) copies per backward pass; bounds memory.
        progress: show a tqdm bar over the chunks of images.

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
    if method not in ("auto", "batched", "per-position"):
        raise ValueError(f"unknown method {method!r}; valid: auto, batched, per-position")
    device = model_device(model)
    x = images.detach().to(device=device, dtype=model_dtype(model))
    with eval_mode(model):
        with torch.no_grad():
            _, _, h, w = check_fmap(model(x[:1])).shape
        flat = torch.tensor([i * w + j for i, j in position_indices(positions, h, w)], device=device)
        maps = None if method == "per-position" else _batched(model, x, flat, chunk_size, method, progress)
        if maps is None:
            maps = _per_position(model, x, flat, chunk_size)
    out = maps.mean(dim=0) if average else maps
    return out.to(torch.float32).cpu().numpy()


def _batched(model: nn.Module, x: Tensor, flat: Tensor, chunk_size: int, method: str,
             progress: bool) -> Tensor | None:
    """The batched path over chunks of images, or None when it cannot run and ``method`` is auto."""
    n_pos = len(flat)
    per_pass = max(1, chunk_size // n_pos)  # images per forward pass
    group = min(n_pos, chunk_size)  # positions per vectorised backward pass
    parts = []
    starts = range(0, len(x), per_pass)
    try:
        for s in tqdm(starts, desc="erf", disable=not progress, leave=False):
            parts.append(_batched_chunk(model, x[s : s + per_pass], flat, group).double())
    except NotVectorisable as err:
        if method == "batched":
            raise
        warnings.warn(f"erf_map: the model's backward pass cannot be vectorised ({err}); "
                      "computing the ERFs position by position instead", RuntimeWarning, stacklevel=3)
        return None
    return torch.cat(parts)


def plot_erf(
    images: Tensor | np.ndarray,
    maps: np.ndarray,
    path: str | Path,
    positions: Sequence[Position] = DEFAULT_POSITIONS,
) -> np.ndarray:
    """Overlay ERF maps on their images, save the figure as PNG and the raw maps beside it.

    Args:
        images: (B, 3, H, W) images in [0, 1].
        maps: (B, P, H, W) per-image maps from ``erf_map(average=False)``, or (P, H, W) averaged maps
            (then the same maps are drawn over every image).
        path: PNG path; the raw and normalised maps go to ``<path>.npz`` and a summary (positions,
            per-map max and total) to ``<path>.json``.
        positions: the P normalised positions, for the column titles.

    Returns:
        (B, P, H, W) maps as drawn: each divided by its own maximum (so each lies in [0, 1]); ERF
        magnitudes differ a lot between positions and models, and the plot is about shape.
    """
    from cossl_analysis.figures import plot_erf_comparison

    images = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 3:
        maps = np.broadcast_to(maps, (len(images), *maps.shape))
    if maps.ndim != 4 or maps.shape[0] != len(images) or maps.shape[2:] != tuple(images.shape[2:]):
        raise ValueError(f"maps {maps.shape} do not match images {tuple(images.shape)}")
    n_img, n_pos = maps.shape[:2]
    plot_erf_comparison(images, {"": maps}, positions, path)
    peak = maps.reshape(n_img, n_pos, -1).max(axis=2)
    shown = maps / np.where(peak > 0, peak, 1.0)[:, :, None, None]
    np.savez_compressed(sibling(path, ".npz"), maps=maps, normalised=shown)
    write_json({"positions": [list(p) for p in positions], "shape": list(maps.shape), "max": peak,
                "total": maps.reshape(n_img, n_pos, -1).sum(axis=2)}, sibling(path, ".json"))
    return np.ascontiguousarray(shown)
