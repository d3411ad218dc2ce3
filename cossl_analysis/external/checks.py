"""Refusals shared by the analyses that compare positions of a map: one line each, typed.

Similarity (Figure 3B) and patch dropping need a map with at least 2x2 positions: at 1x1 the one
local representation *is* the global one. Patch dropping also needs a global representation that
can be re-pooled from a subset of positions, which a class token cannot.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cossl_analysis.analyses._common import check_fmap, model_device, model_dtype
from cossl_analysis.errors import AnalysisError
from cossl_train.evaluate import eval_mode

__all__ = ["map_side", "min_resolution", "require_map_size", "require_poolable_subsets"]

_MAX_SIDE = 4096  # the largest resolution probed when looking for the model's stride


def _name(model: nn.Module) -> str:
    return str(getattr(model, "source", None) or type(model).__name__)


def map_side(model: nn.Module, resolution: int) -> tuple[int, int] | None:
    """(h, w) of the map of one ``resolution`` px image, or None when the model refuses that size."""
    x = torch.zeros(1, 3, resolution, resolution, device=model_device(model), dtype=model_dtype(model))
    with eval_mode(model), torch.no_grad():
        try:
            fmap = check_fmap(model(x))
        except AnalysisError:
            return None
        except Exception:  # noqa: BLE001 - a fixed-size model (or too small an input) refuses the size
            return None
    return int(fmap.shape[2]), int(fmap.shape[3])


def min_resolution(model: nn.Module, min_side: int = 2, start: int | None = None) -> int | None:
    """The smallest side (at least ``start``) found to give a map of ``min_side`` x ``min_side`` or
    more, from the model's stride measured by probing; None when no probed size works (a model that
    takes one input size only)."""
    start = int(start or 1)
    # the stride: pixels per position on a map of a few positions (large enough to be accurate)
    ref = max(start, int(getattr(model, "resolution", 0) or 224))
    stride = None
    while ref <= _MAX_SIDE:
        side = map_side(model, ref)
        if side is not None and min(side) >= 4:
            stride = ref / min(side)
            break
        ref *= 2
    if stride is None:
        return None
    step = max(1, int(stride // 4))
    candidate = max(start, math.ceil(min_side * stride))
    for _ in range(64):  # padding can make a stride's multiple fall one position short
        side = map_side(model, candidate)
        if side is not None and min(side) >= min_side:
            return candidate
        candidate += step
    return None


def require_map_size(model: nn.Module, resolution: int, analysis: str, min_side: int = 2) -> tuple[int, int]:
    """(h, w) of the model's map at ``resolution``; ``AnalysisError`` (one line, with the resolution
    that would do) when a side is below ``min_side``."""
    side = map_side(model, resolution)
    if side is None:
        raise AnalysisError(f"{_name(model)} does not run on {resolution} px images (needed for {analysis})")
    if min(side) >= min_side:
        return side
    need = min_resolution(model, min_side, start=resolution + 1)
    fix = (f"evaluate at {need} px or more (external.resolution={need}, or resolution={need} in Python)"
           if need is not None
           else "no probed resolution gives a larger map (the model takes one input size)")
    raise AnalysisError(f"at {resolution} px {_name(model)} gives a {side[0]}x{side[1]} map; {analysis} needs at least "
                        f"{min_side}x{min_side} positions: {fix}")


def require_poolable_subsets(model: nn.Module, analysis: str = "patch dropping") -> None:
    """``AnalysisError`` when the model's global representation is not head(mean over positions), so
    that it cannot be re-pooled from a subset of them (a class token, max or attention pooling);
    models without the attribute pool by mean."""
    if getattr(model, "poolable_subsets", True):
        return
    what = getattr(model, "global_description", None) or getattr(model, "global_text", None) or "not the mean"
    fix = ("; load it with global_pool='mean' (mean of the patch tokens) to analyse that instead"
           if hasattr(model, "features") else "")
    raise AnalysisError(f"{analysis} re-pools the global representation from the kept positions, but the global "
                        f"representation of {_name(model)} is {what}, which is not the mean of the positions and "
                        f"cannot be re-pooled from a subset{fix}")
