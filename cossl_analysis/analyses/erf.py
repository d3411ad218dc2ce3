"""Effective receptive fields of local representations (Luo et al. 2016; the paper's Figure 4).

The ERF at feature-map index (i, j) of image x is sum_c |d sum_k z[k, i, j] / d x[c]|, the
gradient of the channel sum of the local representation with respect to the [0, 1] pixels, in eval
mode; docs/analysis.md has the definition, the position convention and the two computation paths.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis.analyses._common import check_fmap, check_model, model_device, model_dtype
from cossl_analysis.analyses.defaults import DEFAULT_POSITIONS
from cossl_train.evaluate import eval_mode, pixels

if TYPE_CHECKING:
    from cossl_train.config import Config

__all__ = ["DEFAULT_POSITIONS", "NotVectorisable", "check_positions", "erf_map", "erf_stats", "position_index",
           "position_indices", "rf_centres"]

Position = tuple[float, float]
ErfMethod = Literal["auto", "batched", "looped", "per-position"]


def position_index(p: float, size: int) -> int:
    """Normalised coordinate p in [0, 1] on an axis of ``size`` cells -> index floor(p*(size-1)+0.5)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"normalised position {p} is outside [0, 1]")
    return int(math.floor(p * (size - 1) + 0.5))


def check_positions(positions: Sequence[Position]) -> list[Position]:
    """``positions`` as a list of (row, col) pairs; ValueError (one line) otherwise, and for a bare
    pair ``(0.5, 0.5)``, which means ``[(0.5, 0.5)]``."""
    items = list(positions)
    if len(items) == 2 and all(isinstance(v, (int, float)) for v in items):
        raise ValueError(f"positions is a list of (row, col) pairs, got the bare pair {tuple(items)}; for one "
                         f"position pass [{tuple(items)}]")
    out = []
    for p in items:
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) != 2:
            raise ValueError(f"a position is a (row, col) pair of normalised coordinates, got {p!r}")
        out.append((float(p[0]), float(p[1])))
    return out


def position_indices(positions: Sequence[Position], h: int, w: int) -> list[tuple[int, int]]:
    """Normalised (row, col) positions -> integer (i, j) indices on an h x w feature map."""
    return [(position_index(r, h), position_index(c, w)) for r, c in check_positions(positions)]


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


def _vectorised(selected: Tensor, inp: Tensor, positions: range, retain: bool) -> Tensor:
    """(b, g, H, W): |d selected[:, p] / d inp| summed over channels for the g ``positions``, from
    one backward pass vectorised over them."""
    b, n_pos = selected.shape
    g = len(positions)
    one_hot = torch.zeros(g, b, n_pos, dtype=selected.dtype, device=selected.device)
    one_hot[torch.arange(g), :, torch.as_tensor(list(positions))] = 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            (grads,) = torch.autograd.grad(selected, inp, grad_outputs=one_hot, is_grads_batched=True,
                                           retain_graph=retain)
        except RuntimeError as err:  # e.g. a custom autograd Function that vmap cannot batch
            raise NotVectorisable(str(err).splitlines()[0]) from err
    slow = [w for w in caught if "performance drop" in str(w.message)]
    if slow:  # torch fell back to a Python loop over the positions: no gain over per-position
        raise NotVectorisable(str(slow[0].message).splitlines()[0])
    return grads.abs().sum(dim=2).transpose(0, 1)  # sum |grad| over channels


def _looped(selected: Tensor, inp: Tensor, positions: range, retain: bool) -> Tensor:
    """As :func:`_vectorised`, with one plain backward pass per position."""
    maps = []
    for k, p in enumerate(positions):
        # the images of a chunk are independent in eval mode: one pass gives every image's gradient
        (grad,) = torch.autograd.grad(selected[:, p].sum(), inp, retain_graph=retain or k < len(positions) - 1)
        maps.append(grad.abs().sum(dim=1))
    return torch.stack(maps, dim=1)


def _timed(fn: Any, *args: Any) -> tuple[Tensor, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _batched_chunk(model: nn.Module, x: Tensor, flat: Tensor, group: int,
                   backward: str) -> tuple[Tensor, str]:
    """(b, P, H, W) maps of the images ``x`` (b, 3, H, W) from one forward pass, then the gradients
    of the P selected outputs by ``backward``: ``"vectorised"`` (``group`` positions per backward
    pass), ``"looped"`` (one backward pass per position) or ``"measure"``: the first position looped
    and the next ``group`` vectorised, each timed, the rest by the faster per position (vectorised
    on a tie). Returns the maps and the backward used for the rest."""
    inp = x.detach().clone().requires_grad_()
    selected = _ChannelSumMap(model)(inp)[:, flat]  # (b, P)
    n_pos = selected.shape[1]
    maps, start = [], 0
    if backward == "measure" and n_pos > 1:
        first, t_loop = _timed(_looped, selected, inp, range(1), True)
        stop = min(1 + group, n_pos)
        try:
            # the graph is kept even if this is the last pass: a failed vectorised pass falls back to loops
            rest, t_vec = _timed(_vectorised, selected, inp, range(1, stop), True)
        except NotVectorisable as err:
            warnings.warn(f"erf_map: the model's backward pass cannot be vectorised ({err}); computing the "
                          "ERFs position by position (one backward pass each after one shared forward pass)",
                          RuntimeWarning, stacklevel=4)
            rest, t_vec = _looped(selected, inp, range(1, stop), stop < n_pos), float("inf")
        maps += [first, rest]
        start = stop
        backward = "vectorised" if t_vec / (stop - 1) <= t_loop else "looped"
    elif backward == "measure":
        backward = "looped"
    for s in range(start, n_pos, group if backward == "vectorised" else n_pos):
        stop = min(s + group, n_pos) if backward == "vectorised" else n_pos
        fn = _vectorised if backward == "vectorised" else _looped
        maps.append(fn(selected, inp, range(s, stop), stop < n_pos))
    return torch.cat(maps, dim=1), backward


def _per_position(model: nn.Module, x: Tensor, flat: Tensor, chunk_size: int) -> Tensor:
    """(B, P, H, W) maps with one captum ``Saliency`` call per position (chunks of images)."""
    from captum.attr import Saliency

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
        images: (B, 3, H, W) input images: float in pixel space ([0, 1] for an ``Encoder``), or
            uint8, divided by 255 as everywhere in the package.
        positions: P normalised (row, col) feature-map coordinates in [0, 1] (docs/analysis.md).
        average: average the maps over the B images.
        method: ``"batched"``: one forward pass per chunk of images, every position's gradient from
            vectorised backward passes (``torch.autograd.grad(..., is_grads_batched=True)``);
            ``"looped"``: one forward pass per chunk of images, one plain backward pass per position;
            ``"per-position"``: one captum ``Saliency`` call (forward and backward) per position (the
            reference path); ``"auto"`` (default): one forward pass per chunk of images, then
            looped backward passes on a CPU (faster than vectorised ones at 224 px, level at 56 px,
            on 2 cores) and elsewhere vectorised or looped, whichever was faster per position
            on the first chunk (the first position looped, the next ``chunk_size`` vectorised, both
            timed; the rest by the faster); looped, with a warning, for a model whose backward pass
            cannot be vectorised. Never slower than per-position, which repeats the forward pass
            for every position (docs/analysis.md).
        chunk_size: most (image, position) copies per backward pass (vectorised) or images per
            forward pass (looped); bounds memory.
        progress: show a tqdm bar over the chunks of images.

    Returns:
        float32 array (P, H, W) if ``average`` else (B, P, H, W): |d sum_c z[c, i, j] / dx| summed over
        input channels, in the units of the raw gradient (no normalisation).
    """
    check_model(model, images)
    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    positions = check_positions(positions)
    if len(positions) == 0 or len(images) == 0:
        raise ValueError("erf_map needs at least one image and one position")
    if method not in ("auto", "batched", "looped", "per-position"):
        raise ValueError(f"unknown method {method!r}; valid: auto, batched, looped, per-position")
    device = model_device(model)
    x = pixels(images.detach(), device, model_dtype(model))  # uint8 -> [0, 1], as every analysis reads them
    with eval_mode(model):
        with torch.no_grad():
            _, _, h, w = check_fmap(model(x[:1])).shape
        flat = torch.tensor([i * w + j for i, j in position_indices(positions, h, w)], device=device)
        if method == "per-position":
            maps = _per_position(model, x, flat, chunk_size)
        else:
            maps = _batched(model, x, flat, chunk_size, method, progress)
    out = maps.mean(dim=0) if average else maps
    return out.to(torch.float32).cpu().numpy()


def _auto_backward(device: torch.device) -> str:
    """``auto``'s backward passes: looped on a CPU, where plain passes were faster than vectorised
    ones at 224 px and level at 56 px (docs/benchmarks.md), else measured on the first chunk."""
    return "looped" if device.type == "cpu" else "measure"


def _batched(model: nn.Module, x: Tensor, flat: Tensor, chunk_size: int, method: str, progress: bool) -> Tensor:
    """One forward pass per chunk of images, the positions' gradients by ``method``'s backward
    passes (``auto``: measured on the first chunk, see :func:`_batched_chunk`)."""
    n_pos = len(flat)
    group = min(n_pos, chunk_size)  # positions per vectorised backward pass
    backward = {"batched": "vectorised", "looped": "looped", "auto": _auto_backward(x.device)}[method]
    parts, s = [], 0
    bar = tqdm(total=len(x), desc="erf", disable=not progress, leave=False)
    while s < len(x):
        # images per forward pass: vectorised passes hold (image, position) copies, looped ones images
        per_pass = max(1, chunk_size // group) if backward != "looped" else chunk_size
        chunk = x[s : s + per_pass]
        maps, backward = _batched_chunk(model, chunk, flat, group, backward)
        parts.append(maps.double())
        s += len(chunk)
        bar.update(len(chunk))
    bar.close()
    return torch.cat(parts)


def erf_stats(erf: np.ndarray) -> dict[str, Any]:
    """Summary of one ERF map (H, W): total and peak gradient, centroid (row, col), RMS radius in
    pixels (root of the gradient-weighted mean squared distance to the centroid) and ``area90``,
    the fraction of pixels holding 90% of the gradient mass; None where the map is all zero."""
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


def rf_centres(cfg: Config, positions: Sequence[Position], input_size: int) -> list[tuple[float, float]]:
    """Input-pixel (row, col) centres of the theoretical RFs at normalised ``positions`` for the
    backbone of ``cfg`` at ``input_size`` px (the RF calculator), clipped to the image."""
    from cossl_train.backbones import backbone_info

    info = backbone_info(cfg.backbone.name, small_image=cfg.backbone.small_image, width=cfg.backbone.width,
                         input_size=input_size)
    h = int(info["feature_size"])
    if h < 1:
        raise ValueError(f"backbone {cfg.backbone.name} gives no feature map at {input_size} px")

    def centre(i: int) -> float:
        return float(np.clip(info["start"] + i * info["jump"] + (info["rf"] - 1) / 2, 0, input_size - 1))

    return [(centre(i), centre(j)) for i, j in position_indices(positions, h, h)]
