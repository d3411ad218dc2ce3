"""Local redundancy by patch dropping: a fraction of the local representations is dropped after
the encoder and the global representation is pooled again from the kept ones, head(mean over the
kept positions); its cosine to the intact one (and the probe's accuracy) is reported per fraction.
docs/analysis.md has the number dropped, k(f) = min(floor(f P + 0.5), P - 1), and the drop orders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cossl_analysis.analyses._common import Data, iter_batches, model_device
from cossl_analysis.analyses.accuracy import top1
from cossl_analysis.analyses.defaults import DEFAULT_FRACTIONS
from cossl_analysis.analyses.features import feature_map_size, representations
from cossl_train.encoder import pool_head
from cossl_train.evaluate import eval_mode

__all__ = ["DEFAULT_FRACTIONS", "PatchDropResult", "num_dropped", "patch_drop_analysis", "patch_drop_from_features",
           "pool_kept", "position_drop_order"]

DropMode = Literal["random", "position"]
PositionOrder = Literal["border", "raster"]


@dataclass
class PatchDropResult:
    """Per fraction f asked (``fractions``): the number dropped k and the fraction k / P really
    dropped (f = 1 keeps one: ``all_but_one``), mean and std over images of the cosine to the intact
    global representation, and with a probe its top-1 (``accuracy``; ``intact_accuracy`` at f = 0)."""

    fractions: list[float]
    num_dropped: list[int]
    fraction_dropped: list[float]
    all_but_one: list[bool]
    cosine_mean: list[float]
    cosine_std: list[float]
    accuracy: list[float] | None
    intact_accuracy: float | None
    num_images: int
    num_positions: int
    mode: str
    order: str | None
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PatchDropResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


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
                             feature_map: tuple[int, int] | None = None, batch_size: int = 256) -> PatchDropResult:
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
        device = model_device(probe) if probe is not None else model_device(head)  # CPU for a parameter-free head
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
    return PatchDropResult(
        fractions=[float(f) for f in fractions],
        num_dropped=ks,
        # what was really dropped: k / P, where f = 1 means all but one (k = P - 1)
        fraction_dropped=[k / n_pos for k in ks],
        all_but_one=[k == n_pos - 1 for k in ks],
        cosine_mean=[float(c.mean()) for c in cos],
        # the sample std (ddof = 1), the package's one rule; none with a single image
        cosine_std=[float(c.std(correction=1)) if n_img > 1 else math.nan for c in cos],
        accuracy=accuracy,
        intact_accuracy=intact_accuracy,
        num_images=n_img,
        num_positions=n_pos,
        mode=mode,
        order=order if mode == "position" else None,
        seed=seed,
    )


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
) -> PatchDropResult:
    """Degradation of the global representation (and probe accuracy) as local representations drop.

    Args:
        model: images (B, 3, H, W) -> feature map (B, C, h, w); run in eval mode without gradients.
        images: (B, 3, H, W) tensor, or an iterable of image batches / (images, labels) batches.
        fractions: fractions f of the P positions to drop (see ``num_dropped``).
        mode: ``"random"`` or ``"position"`` (docs/analysis.md).
        order: spatial order when ``mode="position"``: ``"border"`` (inward) or ``"raster"``.
        seed: seeds the random orders.
        probe: linear probe (C -> classes) on pooled features; accuracy is reported when given.
        labels: (B,) int labels when ``images`` is a tensor (else they come with the batches).
        batch_size: images per forward pass when ``images`` is a tensor.
        progress: tqdm bar over batches.

    Returns:
        A :class:`PatchDropResult`.

    Raises:
        AnalysisError: the model's global representation is not head(mean over positions) (a
            class token): a subset of positions cannot be re-pooled into it (docs/analysis.md).
    """
    from cossl_analysis.external.checks import require_poolable_subsets

    require_poolable_subsets(model)
    if labels is None and not isinstance(images, Tensor):
        batches = list(iter_batches(images))
        images = torch.cat([x for x, _ in batches])
        labels = torch.cat([y for _, y in batches]) if all(y is not None for _, y in batches) else None
    _, local = representations(model, images, batch_size, progress)
    return patch_drop_from_features(local, fractions, mode, order, seed, pool_head(model), probe, labels,
                                    feature_map_size(model, images))
