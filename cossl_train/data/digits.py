"""scikit-learn's bundled handwritten digits (1797 8x8 grayscale images, no download).

Upscaled bilinearly to a chosen side, held in memory as uint8 RGB, with a fixed stratified
80/20 train/val split.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .memory import InMemoryImages

__all__ = ["DIGITS_SPLIT_SEED", "DIGITS_VAL_FRACTION", "DigitsDataset", "digits_split"]

#: fraction of each digit class held out for validation, and the seed of that split
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=4)
def _digits_arrays(size: int) -> tuple[Tensor, Tensor]:
    """All 1797 digits as uint8 (N, 3, size, size) and int64 labels (N,), cached per size."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # pixel values are integers 0..16 on an 8x8 grid; map to [0, 1] before resampling
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return x, y


@functools.lru_cache(maxsize=1)
def digits_split() -> dict[str, np.ndarray]:
    """Stratified split of the 1797 digits: per class, a fixed random 20% goes to validation.

    Returns sorted positions (in scikit-learn's order) for ``"train"``, ``"val"`` and ``"all"``.
    """
    from sklearn.datasets import load_digits

    y = load_digits().target
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    train, val = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        perm = rng.permutation(idx)
        n_val = int(round(DIGITS_VAL_FRACTION * len(idx)))
        val.append(perm[:n_val])
        train.append(perm[n_val:])
    return {
        "train": np.sort(np.concatenate(train)),
        "val": np.sort(np.concatenate(val)),
        "all": np.arange(len(y)),
    }


class DigitsDataset(InMemoryImages):
    """scikit-learn's handwritten digits as uint8 RGB images, in memory.

    ``split`` is ``"train"`` (1437 images), ``"val"`` (360) or ``"all"`` (1797). Samples are
    ``(uint8 tensor (3, size, size), label in 0..9)``.
    """

    def __init__(self, split: str = "train", size: int = 32) -> None:
        splits = digits_split()
        if split not in splits:
            raise ValueError(f"digits split must be one of {', '.join(splits)}, got {split!r}")
        images, labels = _digits_arrays(int(size))
        index = torch.from_numpy(splits[split])
        self.images = images[index]
        self.labels = labels[index]
        #: positions in scikit-learn's order of the digits of this split
        self.indices = splits[split]
        self.split = split
        self.classes = [str(c) for c in range(10)]
