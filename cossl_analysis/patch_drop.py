"""Local redundancy via patch dropping.

The global representation pools the P = h*w local representations (their mean, followed by the
encoder's head when it has one). Here a fraction f of them is dropped *after* the encoder (the
encoder still sees the whole image) and the global representation is re-pooled from the kept
positions: head(mean over the kept positions). If local representations are
redundant (each carries the image-level content, as CO-SSL encourages), the degraded global
representation stays close to the intact one and the linear probe keeps its accuracy.

Definitions.
* Number dropped: k(f) = min(floor(f * P + 0.5), P - 1), f in [0, 1]: at least one position is
  always kept, so f = 1 means "all but one". Results and plots give the fraction actually dropped,
  k / P (``fraction_dropped``; at most (P - 1) / P), and flag the all-but-one point.
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
from torch import Tensor, nn

from cossl_analysis._utils import (
    Data,
    check_fmap,
    eval_mode,
    iter_batches,
    model_device,
    model_dtype,
    sibling,
    write_json,
)
from cossl_analysis.accuracy import pixels, top1
from cossl_analysis.features import extract_features
from cossl_analysis.options import DEFAULT_FRACTIONS
from cossl_analysis.plots import Panel, Series, plot_panels
from cossl_train.encoder import pool_head

DropMode = Literal["random", "position"]
PositionOrder = Literal["border", "raster"]


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


def patch_drop_from_features(local: Tensor, fractions: Sequence[float] = DEFAULT_FRACTIONS, mode: DropMode = "random",
                             order: PositionOrder = "border", seed: int = 0, head: nn.Module | None = None,
                             probe: nn.Module | None = None, labels: Tensor | None = None,
                             feature_map: tuple[int, int] | None = None, batch_size: int = 256) -> dict[str, Any]:
    """Patch dropping on precomputed local representations (B, P, C) (see ``patch_drop_analysis``).

    ``head`` is what the model applies after the spatial mean (``pool_head``); ``feature_map`` the
    (h, w) of the map, needed for ``mode="position"``.
    """
    if mode not in ("random", "position"):
        raise ValueError(f"unknown mode {mode!r}")
    if probe is not None and labels is None:
        raise ValueError("a probe needs labels")
    n_img, n_pos, _ = local.shape
    if n_img == 0:
        raise ValueError("no images")
    head = nn.Identity() if head is None else head
    if mode == "random":
        # One permutation per image, drawn in data order (independent of batch size).
        gen = torch.Generator().manual_seed(seed)
        orders = torch.stack([torch.randperm(n_pos, generator=gen) for _ in range(n_img)])
    else:
        h, w = feature_map if feature_map is not None else (1, n_pos)
        orders = position_drop_order(h, w, order).expand(n_img, n_pos)
    ks = [num_dropped(f, n_pos) for f in fractions]
    local = local.float()
    with eval_mode(head, probe), torch.no_grad():
        device = model_device(probe) if probe is not None else torch.device("cpu")
        intact = head(local.mean(dim=1).to(device))

        def pooled(idx: Tensor, k: int) -> Tensor:
            return head(pool_kept(local[idx].to(device), orders[idx], k))

        cos = [F.cosine_similarity(pooled(torch.arange(n_img), k), intact, dim=1, eps=1e-12).double().cpu()
               for k in ks]
        everything = torch.arange(n_img)
        accuracy = None if probe is None else [
            top1(lambda idx, _, k=k: probe(pooled(idx, k)), everything, labels, batch_size) for k in ks]
        intact_accuracy = None if probe is None else top1(lambda idx, _: probe(intact[idx]), everything, labels,
                                                          batch_size)
    return {
        "fractions": [float(f) for f in fractions],
        "num_dropped": ks,
        # what was really dropped: k / P, where f = 1 means all but one (k = P - 1)
        "fraction_dropped": [k / n_pos for k in ks],
        "all_but_one": [k == n_pos - 1 for k in ks],
        "cosine_mean": [float(c.mean()) for c in cos],
        "cosine_std": [float(c.std(correction=0)) for c in cos],
        "accuracy": accuracy,
        "intact_accuracy": intact_accuracy,
        "num_images": n_img,
        "num_positions": n_pos,
        "mode": mode,
        "order": order if mode == "position" else None,
        "seed": seed,
    }


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
        Raw numbers: ``fractions`` (asked), ``num_dropped`` k and ``fraction_dropped`` k / P (done),
        ``all_but_one`` (per f: whether k = P - 1), ``cosine_mean``/``cosine_std`` (per f),
        ``accuracy`` (per f, or None), ``intact_accuracy`` (or None), ``num_images``,
        ``num_positions``, ``mode``, ``order``, ``seed``.
    """
    if labels is None and not isinstance(images, Tensor):
        batches = list(iter_batches(images))
        images = torch.cat([x for x, _ in batches])
        labels = torch.cat([y for _, y in batches]) if all(y is not None for _, y in batches) else None
    with eval_mode(model), torch.no_grad():
        _, _, h, w = check_fmap(model(pixels(images[:1], model_device(model), model_dtype(model)))).shape
    _, local = extract_features(model, images, batch_size, progress)
    return patch_drop_from_features(local, fractions, mode, order, seed, pool_head(model), probe, labels, (h, w))


def dropped_axis(result: Mapping[str, Any]) -> tuple[list[float], list[str]]:
    """Ticks of the honest x axis: the fractions actually dropped (k / P), with "(all but one)" after
    the one that keeps a single position."""
    x = list(result["fraction_dropped"])
    names = [f"{v:.2g}" + (" (all but one)" if last else "") for v, last in zip(x, result["all_but_one"], strict=True)]
    return x, names


def drop_panels(curves: Mapping[str, Mapping[str, Any]], spreads: Mapping[str, Mapping[str, Any]] | None = None,
                spread_name: str = "std over images") -> list[Panel]:
    """Panels of cosine (and accuracy, where present) against the fraction dropped, one curve per label.

    ``curves``: label -> a result of ``patch_drop_analysis`` (or a mean over seeds in that form);
    ``spreads``: label -> the same keys holding the spreads to draw (default: the std over images).
    """
    first = next(iter(curves.values()))
    x, names = dropped_axis(first)
    how = sorted({r["mode"] if r["mode"] == "random" else f"position/{r['order']}" for r in curves.values()})
    xlabel = f"fraction of local representations dropped, k / P ({', '.join(how)})"
    last = [(v, "all but one") for v, n in zip(x, names, strict=True) if n.endswith("(all but one)")]
    cosine = Panel(f"cosine to the intact global representation (band: {spread_name})", xlabel, "cosine",
                   marker=last[0] if last else None)
    accuracy = Panel("linear-probe accuracy", xlabel, "top-1 accuracy (%)", marker=cosine.marker)
    for label, r in curves.items():
        spread = spreads[label] if spreads is not None else None
        cosine.series.append(Series(label, r["fraction_dropped"], r["cosine_mean"],
                                    spread["cosine_mean"] if spread is not None else r["cosine_std"]))
        if r.get("accuracy") is not None:
            acc_spread = None if spread is None or spread.get("accuracy") is None else 100 * np.asarray(
                spread["accuracy"])
            accuracy.series.append(Series(label, r["fraction_dropped"], 100 * np.asarray(r["accuracy"]), acc_spread))
    return [cosine, accuracy] if accuracy.series else [cosine]


def plot_patch_drop(results: Mapping[str, Any], path: str | Path) -> dict[str, dict[str, Any]]:
    """Plot cosine to the intact global representation (and probe accuracy) against k / P.

    Args:
        results: one dict from ``patch_drop_analysis`` or {label: dict} for several models.
        path: PNG path; the raw numbers go to ``<path>.json``.

    Returns:
        {label: raw numbers} as written to the JSON.
    """
    runs = {"model": dict(results)} if "fractions" in results else {k: dict(v) for k, v in results.items()}
    plot_panels(drop_panels(runs), path)
    write_json(runs, sibling(path, ".json"))
    return runs
