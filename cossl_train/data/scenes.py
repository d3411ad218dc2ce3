"""Digit scenes, the embedded default dataset: a bundled handwritten digit as a white silhouette at a
random position, scale and tilt over a dark grey crop of a bundled photograph, generated in memory
(no download); val glyphs are never seen in training. Why this design: docs/data.md."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .digits import digits_split
from .memory import InMemoryImages

__all__ = ["SCENES_SIZES", "DigitScenes", "digit_scenes"]

#: images per split
SCENES_SIZES = {"train": 6000, "val": 2000}
#: bundled photographs the clutter is cut from (scikit-image names; scikit-learn's two sample images are added)
PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "rocket", "immunohistochemistry", "retina",
          "brick", "camera", "coins", "grass", "gravel", "moon", "page", "text", "cell")
#: photos are stored square at this side before cropping
PHOTO_SIDE = 128
#: fixed generation parameters (ranges are uniform draws); documented in docs/data.md
BG_CROP = (0.15, 0.6)  # fraction of the photo's side one background covers
BG_GAIN = (0.6, 1.3)  # per-channel gain before the conversion to grey
BG_CONTRAST = (0.4, 1.0)  # contrast of the photo crop ...
BG_LEVEL, BG_AMPLITUDE = 0.15, 0.3  # ... then darkened and flattened: mean level, contrast kept
GLYPH_SCALE = (0.6, 0.9)  # glyph side / image side
GLYPH_TILT = 10.0  # degrees, either way


@functools.lru_cache(maxsize=1)
def _photos() -> Tensor:
    """The bundled photographs, centre-cropped square, float (P, 3, PHOTO_SIDE, PHOTO_SIDE) in [0, 1]."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    arrays = [getattr(skimage.data, n)() for n in PHOTOS] + list(load_sample_images().images)
    out = []
    for a in arrays:
        t = torch.from_numpy(np.array(a, dtype=np.float32)) / 255.0
        t = t[None].expand(3, -1, -1) if t.ndim == 2 else t[..., :3].permute(2, 0, 1)
        h, w = t.shape[1:]
        s = min(h, w)
        t = t[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(F.interpolate(t[None], size=(PHOTO_SIDE, PHOTO_SIDE), mode="bilinear", antialias=True,
                                 align_corners=False)[0])
    return torch.stack(out)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _luminance(x: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, H, W)."""
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _crops(g: torch.Generator, src: Tensor, n: int, side: int, frac: tuple[float, float]) -> Tensor:
    """``n`` random square crops (fraction ``frac`` of the side) of random images of ``src``, at ``side`` px."""
    idx = torch.randint(0, len(src), (n,), generator=g)
    f = _uniform(g, n, *frac)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = f * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)  # random mirror
    theta[:, 1, 1] = f
    theta[:, 0, 2] = _uniform(g, n, -1, 1) * (1 - f)
    theta[:, 1, 2] = _uniform(g, n, -1, 1) * (1 - f)
    grid = F.affine_grid(theta, [n, 3, side, side], align_corners=False)
    return F.grid_sample(src[idx], grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _backgrounds(g: torch.Generator, n: int, side: int) -> Tensor:
    """Grey, dark, low-contrast photo crops (clutter): (n, 3, side, side), the three channels equal."""
    bg = _crops(g, _photos(), n, side, BG_CROP)
    perm = torch.stack([torch.randperm(3, generator=g) for _ in range(n)])
    bg = torch.gather(bg, 1, perm[:, :, None, None].expand(-1, -1, side, side))
    bg = (bg * _uniform(g, 3 * n, *BG_GAIN).view(n, 3, 1, 1)).clamp(0, 1)
    mean = bg.mean(dim=(1, 2, 3), keepdim=True)
    bg = (mean + (bg - mean) * _uniform(g, n, *BG_CONTRAST).view(n, 1, 1, 1)).clamp(0, 1)
    bg = (BG_LEVEL + (bg - bg.mean(dim=(1, 2, 3), keepdim=True)) * BG_AMPLITUDE).clamp(0, 1)
    return _luminance(bg)[:, None].expand(n, 3, side, side)


def _glyph_masks(g: torch.Generator, glyphs: Tensor, side: int) -> Tensor:
    """Each 8x8 glyph (n, 8, 8) in [0, 1] placed at a random scale, position and tilt: soft masks (n, 1, side, side)."""
    n = len(glyphs)
    scale = _uniform(g, n, *GLYPH_SCALE)
    cx, cy = (_uniform(g, n, -1, 1) * (1 - scale) for _ in range(2))
    angle = _uniform(g, n, -GLYPH_TILT, GLYPH_TILT) * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output -> input coordinates: the glyph fills a box of relative side `scale` centred on (cx, cy)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos / scale, sin / scale
    theta[:, 1, 0], theta[:, 1, 1] = -sin / scale, cos / scale
    theta[:, 0, 2] = -(theta[:, 0, 0] * cx + theta[:, 0, 1] * cy)
    theta[:, 1, 2] = -(theta[:, 1, 0] * cx + theta[:, 1, 1] * cy)
    grid = F.affine_grid(theta, [n, 1, side, side], align_corners=False)
    ink = F.grid_sample(glyphs[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return ((ink - 0.3) * 6).clamp(0, 1)  # sharpen the bilinear 8x8 strokes into a silhouette


def _balanced_instances(g: torch.Generator, labels: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``n`` labels, ``n / 10`` of each class in random order, and for each a random glyph of its class."""
    lab = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    inst = torch.empty(n, dtype=torch.long)
    for c in range(10):
        pool = torch.nonzero(labels == c).flatten()
        sel = lab == c
        inst[sel] = pool[torch.randint(0, len(pool), (int(sel.sum()),), generator=g)]
    return lab, inst


@functools.lru_cache(maxsize=4)
def digit_scenes(split: str, side: int = 32, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Generate one split: uint8 images (N, 3, side, side), labels (N,), and the glyph each image
    draws (positions in scikit-learn's digits order) (N,). Deterministic for ``(split, side, seed)``."""
    from sklearn.datasets import load_digits

    if split not in SCENES_SIZES:
        raise ValueError(f"digit scenes split must be one of {', '.join(SCENES_SIZES)}, got {split!r}")
    bunch = load_digits()
    pool = torch.from_numpy(digits_split()[split])
    glyphs = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[pool]
    g = torch.Generator().manual_seed(2 * int(seed) + (split == "val"))
    lab, inst = _balanced_instances(g, torch.from_numpy(bunch.target)[pool], SCENES_SIZES[split])
    mask = _glyph_masks(g, glyphs[inst], side)
    img = _backgrounds(g, len(lab), side) * (1 - mask) + mask  # white silhouette over the clutter
    return (img * 255).round().clamp(0, 255).to(torch.uint8), lab, pool[inst]


class DigitScenes(InMemoryImages):
    """The digit scenes of :func:`digit_scenes` as a dataset: ``(uint8 (3, side, side), label in 0..9)``."""

    def __init__(self, split: str = "train", side: int = 32, seed: int = 0) -> None:
        self.images, self.labels, self.glyphs = digit_scenes(split, int(side), int(seed))
        self.split = split
        self.classes = [str(c) for c in range(10)]
