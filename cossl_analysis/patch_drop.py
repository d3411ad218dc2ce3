"""Local redundancy via patch dropping.

The global representation is the mean of the P = h*w local representations. Here a fraction f of
them is dropped *after* the encoder (the encoder still sees the whole image) and the global
representation is re-pooled as the mean over the kept positions. If local representations are
redundant (each carries the image-level content, as CO-SSL encourages), the degraded global
representation stays close to the intact one and the linear probe keeps its accuracy.

Definitions.
* Number dropped: k(f) = min(floor(f * P + 0.5), P - 1), f in [0, 1]: at least one position is
  always kept, so f = 1 means "all but one".
* Drop order (the first k positions of an order are the dropped ones, so drops are nested: what is
  dropped at f is also dropped at any f' > f):
    - ``mode="random"``: one uniformly random permutation of the positions per image, from a
      generator seeded with ``seed`` and consumed image by image in data order (so the result does
      not depend on the batch size).
    - ``mode="position"``, ``order="border"``: from the border inward, ring by ring, where the
      ring of (i, j) is min(i, j, h-1-i, w-1-j); raster order within a ring. The last kept position
      is a central one.
    - ``mode="position"``, ``order="raster"``: raster order (row by row from the top-left).
* Reported per f: mean and std over images of cos(degraded global, intact global), and, with a probe
  and labels, top-1 accuracy of ``probe(degraded global)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis._utils import (
    Data,
    check_fmap,
    eval_mode,
    iter_batches,
    model_device,
    model_dtype,
    num_batches,
    sibling,
    write_json,
)
from cossl_train.encoder import local_features

DropMode = Literal["random", "position"]
PositionOrder = Literal["border", "raster"]
DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def num_dropped(fraction: float, num_positions: int) -> int:
    """k(f) = min(floor(f * P + 0.5), P - 1): how many of P positions a fraction f drops."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is outside [0, 1]")
    return min(int(math.floor(fraction * num_positions + 0.5)), num_positions - 1)


def position_drop_order(h: int, w: int, order: PositionOrder = "border") -> Tensor:
    """(P,) flat positions of an h x w map in dropping order (first = dropped first)."""
    raster = torch.arange(h * w)
    if order == "raster":
        return raster
    if order != "border":
        raise ValueError(f"unknown position order {order!r}")
    i, j = raster // w, raster % w
    ring = torch.minimum(torch.minimum(i, j), torch.minimum(h - 1 - i, w - 1 - j))
    # Sort by ring, raster within a ring: encode as one integer key so a plain sort is exact.
    return torch.argsort(ring * (h * w) + raster)


def pool_kept(local: Tensor, order: Tensor, k: int) -> Tensor:
    """Mean over the kept local representations.

    Args:
        local: (B, P, C) local representations.
        order: (B, P) or (P,) dropping order; positions ``order[..., :k]`` are dropped.
        k: number of dropped positions, 0 <= k < P.

    Returns:
        (B, C) re-pooled global representations.
    """
    n_img, n_pos, _ = local.shape
    if not 0 <= k < n_pos:
        raise ValueError(f"cannot drop {k} of {n_pos} positions")
    order = order.to(local.device).expand(n_img, n_pos)
    keep = torch.ones(n_img, n_pos, dtype=local.dtype, device=local.device)
    keep.scatter_(1, order[:, :k], 0.0)
    return (local * keep.unsqueeze(-1)).sum(dim=1) / (n_pos - k)


@torch.no_grad()
def patch_drop_analysis(
    model: nn.Module,
    images: Data,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    mode: DropMode = "random",
    order: PositionOrder = "border",
    seed: int = 0,
    probe: nn.Module | None = None,
    labels: Tensor | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Degradation of the global representation (and probe accuracy) as local representations drop.

    Args:
        model: images (B, 3, H, W) -> feature map (B, C, h, w); run in eval mode without gradients.
        images: (B, 3, H, W) tensor, or an iterable of image batches / (images, labels) batches.
        fractions: fractions f of the P positions to drop (see ``num_dropped``).
        mode: ``"random"`` or ``"position"`` (module docstring).
        order: spatial order when ``mode="position"``: ``"border"`` (inward) or ``"raster"``.
        seed: seeds the random orders.
        probe: linear probe (C -> classes) on pooled features; accuracy is reported when given.
        labels: (B,) int labels when ``images`` is a tensor (else they come with the batches).
        batch_size: images per forward pass when ``images`` is a tensor.
        progress: tqdm bar over batches.

    Returns:
        Raw numbers: ``fractions``, ``num_dropped`` (per f), ``cosine_mean``/``cosine_std`` (per f),
        ``accuracy`` (per f, or None), ``intact_accuracy`` (or None), ``num_images``,
        ``num_positions``, ``mode``, ``order``, ``seed``.
    """
    if mode not in ("random", "position"):
        raise ValueError(f"unknown mode {mode!r}")
    device, dtype = model_device(model), model_dtype(model)
    gen = torch.Generator().manual_seed(seed)
    n_f = len(fractions)
    cos_sum = torch.zeros(n_f, dtype=torch.float64)
    cos_sq = torch.zeros(n_f, dtype=torch.float64)
    correct = torch.zeros(n_f, dtype=torch.float64)
    intact_correct = 0.0
    n_seen = 0
    n_pos = -1
    ks: list[int] = []
    fixed_order: Tensor | None = None

    with eval_mode(model, probe):
        batches = iter_batches(images, labels, batch_size)
        total = num_batches(images, batch_size)
        for x, y in tqdm(batches, desc="patch drop", disable=not progress, leave=False, total=total):
            fmap = check_fmap(model(x.to(device=device, dtype=dtype))).float()
            local = local_features(fmap)  # (b, P, C)
            b, n_pos, _ = local.shape
            if not ks:
                ks = [num_dropped(f, n_pos) for f in fractions]
                if mode == "position":
                    fixed_order = position_drop_order(fmap.shape[2], fmap.shape[3], order)
            if mode == "random":
                # One permutation per image, drawn in data order (independent of batch size).
                batch_order = torch.stack([torch.randperm(n_pos, generator=gen) for _ in range(b)])
            else:
                assert fixed_order is not None
                batch_order = fixed_order
            intact = local.mean(dim=1)
            if probe is not None:
                if y is None:
                    raise ValueError("a probe needs labels")
                y = y.to(device)
                intact_correct += (probe(intact).argmax(dim=1) == y).sum().item()
            for t, k in enumerate(ks):
                degraded = pool_kept(local, batch_order, k)
                cos = F.cosine_similarity(degraded, intact, dim=1, eps=1e-12).double().cpu()
                cos_sum[t] += cos.sum()
                cos_sq[t] += (cos * cos).sum()
                if probe is not None:
                    correct[t] += (probe(degraded).argmax(dim=1) == y).sum().item()
            n_seen += b

    if n_seen == 0:
        raise ValueError("no images")
    mean = cos_sum / n_seen
    std = (cos_sq / n_seen - mean * mean).clamp_min(0).sqrt()
    return {
        "fractions": [float(f) for f in fractions],
        "num_dropped": ks,
        "cosine_mean": mean.tolist(),
        "cosine_std": std.tolist(),
        "accuracy": (correct / n_seen).tolist() if probe is not None else None,
        "intact_accuracy": intact_correct / n_seen if probe is not None else None,
        "num_images": n_seen,
        "num_positions": n_pos,
        "mode": mode,
        "order": order if mode == "position" else None,
        "seed": seed,
    }


def _labelled(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """One raw-numbers dict (it has a ``fractions`` key) or {label: dict} -> {label: dict}."""
    return {"model": dict(results)} if "fractions" in results else {k: dict(v) for k, v in results.items()}


def plot_patch_drop(results: Mapping[str, Any], path: str | Path) -> dict[str, dict[str, Any]]:
    """Plot cosine to the intact global representation (and probe accuracy) against f.

    Args:
        results: one dict from ``patch_drop_analysis`` or {label: dict} for several models.
        path: PNG path; the raw numbers go to ``<path>.json``.

    Returns:
        {label: raw numbers} as written to the JSON.
    """
    runs = _labelled(results)
    with_acc = any(r.get("accuracy") is not None for r in runs.values())
    fig = Figure(figsize=(10 if with_acc else 5, 4))
    axes = fig.subplots(1, 2 if with_acc else 1, squeeze=False)[0]
    for k, (label, r) in enumerate(runs.items()):
        color = f"C{k % 10}"
        f = np.asarray(r["fractions"])
        m, s = np.asarray(r["cosine_mean"]), np.asarray(r["cosine_std"])
        axes[0].plot(f, m, marker="o", color=color, label=label)
        axes[0].fill_between(f, m - s, m + s, color=color, alpha=0.2)
        if with_acc and r.get("accuracy") is not None:
            axes[1].plot(f, 100 * np.asarray(r["accuracy"]), marker="o", color=color, label=label)
    how = {r["mode"] if r["mode"] == "random" else f"position/{r['order']}" for r in runs.values()}
    axes[0].set_xlabel(f"fraction of local representations dropped ({', '.join(sorted(how))})")
    axes[0].set_ylabel("cosine to intact global representation")
    axes[0].legend(fontsize=8)
    if with_acc:
        axes[1].set_xlabel("fraction of local representations dropped")
        axes[1].set_ylabel("linear-probe top-1 accuracy (%)")
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    write_json(runs, sibling(path, ".json"))
    return runs
