"""Random-resized crops as a pure function of a per-sample seed: the boxes (torchvision's
``RandomResizedCrop`` rule, drawn from the seed's own SplitMix64 stream) and an antialiased
bilinear crop of a whole uint8 batch in two matrix products whose arithmetic is exact, so a
sample's crop does not depend on the batch it is cut in (docs/training.md, "Augmentations:
randomness and resume")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ATTEMPTS",
    "DRAWS_PER_VIEW",
    "RATIO",
    "CropBoxes",
    "resample_weights",
    "resized_crops",
    "sample_boxes",
    "seed_uniforms",
]

#: aspect-ratio range of every random-resized crop (torchvision's default)
RATIO = (3 / 4, 4 / 3)
#: tries at an in-bounds box before the central fallback (torchvision's 10)
ATTEMPTS = 10
#: uniforms one view uses: a scale and a log-ratio per attempt, then top, left and the flip
DRAWS_PER_VIEW = 2 * ATTEMPTS + 3
#: fixed-point precision of the resampling weights (see :func:`resized_crops`)
WEIGHT_BITS = 14

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def seed_uniforms(seeds: np.ndarray | list[int], start: int, count: int) -> np.ndarray:
    """Uniforms in [0, 1): outputs ``start .. start + count - 1`` of the SplitMix64 stream of each
    seed, as float64 (B, count). A counter-based stream: any slice of it is computed directly.

    >>> seed_uniforms([1, 2], 0, 3).shape
    (2, 3)
    """
    s = np.asarray(seeds, dtype=np.uint64).reshape(-1, 1)
    k = np.arange(start + 1, start + count + 1, dtype=np.uint64).reshape(1, -1)
    with np.errstate(over="ignore"):  # modular arithmetic is the point
        z = s + k * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class CropBoxes:
    """Integer boxes of B crops (int64 arrays (B,)) and whether each is flipped horizontally."""

    top: np.ndarray
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return len(self.top)

    def __getitem__(self, i: int) -> tuple[int, int, int, int, bool]:
        return int(self.top[i]), int(self.left[i]), int(self.height[i]), int(self.width[i]), bool(self.flip[i])

    @staticmethod
    def concat(parts: Sequence[CropBoxes]) -> CropBoxes:
        """The boxes of ``parts``, one after the other."""
        return CropBoxes(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                           ("top", "left", "height", "width", "flip")))


def _fallback(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's box when every attempt failed: the whole image, cut to the ratio range."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def sample_boxes(u: np.ndarray, height: int, width: int, scale: tuple[float, float],
                 ratio: tuple[float, float] = RATIO) -> CropBoxes:
    """Crop boxes of an ``height`` x ``width`` image from uniforms ``u`` (B, DRAWS_PER_VIEW).

    torchvision's RandomResizedCrop rule, vectorised: up to 10 attempts of an area ``scale`` times
    the image's (uniform) and a log-uniform aspect ratio, sides rounded half to even; the first
    attempt that fits is placed uniformly; if none fits, the central crop of the fallback. Then a
    flip with p = 0.5.

    >>> b = sample_boxes(seed_uniforms([0], 0, DRAWS_PER_VIEW), 32, 32, (0.2, 1.0))
    >>> bool(0 < b.height[0] <= 32 and 0 <= b.top[0] <= 32 - b.height[0])
    True
    """
    n = u.shape[0]
    area = float(height * width)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, :ATTEMPTS])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(lo + (hi - lo) * u[:, ATTEMPTS:2 * ATTEMPTS])
    w = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.argmax(axis=1)
    found = fits.any(axis=1)
    rows = np.arange(n)
    fh, fw = _fallback(height, width, ratio)
    bh = np.where(found, h[rows, first], fh)
    bw = np.where(found, w[rows, first], fw)
    top = np.where(found, np.floor(u[:, -3] * (height - bh + 1)).astype(np.int64), (height - bh) // 2)
    left = np.where(found, np.floor(u[:, -2] * (width - bw + 1)).astype(np.int64), (width - bw) // 2)
    return CropBoxes(top, left, bh, bw, u[:, -1] < 0.5)


def resample_weights(size: int, start: np.ndarray, length: np.ndarray, out: int) -> Tensor:
    """Antialiased bilinear weights, float64 (B, out, size), taking pixels ``start .. start + length
    - 1`` of an axis of ``size`` pixels to ``out`` pixels: the triangle filter widened by the
    downscaling factor (PIL's and torch's ``antialias=True`` rule), normalised per output pixel.

    >>> resample_weights(4, np.array([0]), np.array([4]), 2)[0]
    tensor([[0.4286, 0.4286, 0.1429, 0.0000],
            [0.0000, 0.1429, 0.4286, 0.4286]], dtype=torch.float64)
    """
    length_ = torch.from_numpy(np.asarray(length, dtype=np.float64)).view(-1, 1, 1)
    scale = length_ / out
    centre = scale * (torch.arange(out, dtype=torch.float64).view(1, -1, 1) + 0.5)
    # position of every input pixel inside the crop
    x = torch.arange(size, dtype=torch.float64).view(1, 1, -1) - torch.from_numpy(
        np.asarray(start, dtype=np.float64)).view(-1, 1, 1)
    w = (x + 0.5 - centre).div_(scale.clamp(min=1.0)).abs_().neg_().add_(1.0).clamp_(min=0.0)
    w.masked_fill_((x < 0) | (x >= length_), 0.0)
    return w.div_(w.sum(dim=2, keepdim=True))


def _fixed_point(w: Tensor) -> Tensor:
    """Weights rounded to multiples of 2**-WEIGHT_BITS, scaled to integers, as float32."""
    return (w * 2.0**WEIGHT_BITS).round_().float()


def _round_pixels(x: Tensor) -> Tensor:
    """Integer sums of (pixel x fixed-point weight) -> the nearest pixel value in [0, 255]."""
    return x.mul_(2.0**-WEIGHT_BITS).add_(0.5).floor_().clamp_(0, 255)


def resized_crops(images: Tensor, boxes: CropBoxes, size: int) -> Tensor:
    """Crop every image of a uint8 batch (B, C, H, W) to its box, resize to ``size`` x ``size``
    (bilinear, antialiased) and flip where the box says: uint8 (B, C, size, size).

    Two passes, columns then rows, each a batched product with fixed-point weights
    (:data:`WEIGHT_BITS`) rounded to whole pixel values, as PIL and torch do for uint8. Every
    product and partial sum is an integer below 2**24, exact in float32 whatever the summation
    order, so a crop is the same in any batch and on any thread count; it agrees with torchvision's
    ``resized_crop(..., antialias=True)`` to within one grey level.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 (B, C, H, W) batch, got {images.dtype} {tuple(images.shape)}")
    b, c, height, width = images.shape
    if len(boxes) != b:
        raise ValueError(f"{len(boxes)} boxes for {b} images")
    wx = _fixed_point(resample_weights(width, boxes.left, boxes.width, size))
    flip = torch.from_numpy(np.asarray(boxes.flip, dtype=bool))
    wx = torch.where(flip.view(-1, 1, 1), wx.flip(1), wx)
    wy = _fixed_point(resample_weights(height, boxes.top, boxes.height, size))
    # columns: (B, C*H, W) @ (B, W, size); rows: (B, size, H) @ (B, H, C*size)
    cols = _round_pixels(torch.bmm(images.float().view(b, c * height, width), wx.transpose(1, 2)))
    cols = cols.view(b, c, height, size).transpose(1, 2).reshape(b, height, c * size)
    out = _round_pixels(torch.bmm(wy, cols)).view(b, size, c, size).transpose(1, 2)
    return out.to(torch.uint8).contiguous()
