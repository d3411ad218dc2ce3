"""Effective receptive fields of local representations (Luo et al. 2016; the paper's Figure 4).

The ERF at feature-map index (i, j) of image x is sum_c |d sum_k z[k, i, j] / d x[c]|, the
gradient of the channel sum of the local representation with respect to the [0, 1] pixels, in eval
mode; docs/analysis.md has the definition, the position convention and the two computation paths.
"""

from __future__ import annotations

import math
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
ErfMethod = Literal["auto", "batched", "per-position"]


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
            ``"per-position"``: one captum ``Saliency`` call per position (the reference path);
            ``"auto"`` (default): batched, falling back to per-position (with a warning) for a
            model whose backward pass cannot be vectorised.
        chunk_size: most (image, position) copies per backward pass; bounds memory.
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
    if method not in ("auto", "batched", "per-position"):
        raise ValueError(f"unknown method {method!r}; valid: auto, batched, per-position")
    device = model_device(model)
    x = pixels(images.detach(), device, model_dtype(model))  # uint8 -> [0, 1], as every analysis reads them
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
