"""BYOL's two asymmetric augmentation pipelines, split where the work is cheapest: the geometric
half on the loader side (``TwoViewCrop``, ``MultiCrop``: per image for files, a whole batch at once
for images held in memory), the photometric half batched on the training device
(``BatchPhotometric``), both under explicit seeds so that a resumed run reproduces an
uninterrupted one (docs/training.md, "Augmentations: randomness and resume")."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import kornia.augmentation as K
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor, nn

from .config import AugmentConfig
from .crops import DRAWS_PER_VIEW, CropBoxes, resized_crops, sample_boxes, seed_uniforms

__all__ = [
    "BatchPhotometric",
    "EvalTransform",
    "MultiCrop",
    "SeededCrops",
    "TwoViewCrop",
    "blur_kernel_size",
    "blur_sigma_range",
    "describe",
    "eval_transform",
    "local_resolution",
    "seeded_cpu_rng",
    "to_rgb_uint8",
]

#: the usual ImageNet evaluation ratio: resize to R / 0.875 (256 for 224), then centre-crop R
EVAL_CROP_RATIO = 0.875
#: DINO's local-crop side relative to its global-crop side (96 px at 224 px)
LOCAL_RESOLUTION_RATIO = 96 / 224


@contextlib.contextmanager
def seeded_cpu_rng(seed: int | None) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded to ``seed``, then restore its state.

    ``None`` leaves the generator alone (the block draws from the global stream). Only the CPU
    generator is touched: ``torch.manual_seed`` would also reseed every CUDA generator, which would
    clobber the trainer's CUDA RNG when a loader runs in the main process.
    """
    if seed is None:
        yield
        return
    state = torch.get_rng_state()
    # 64-bit range: torch accepts seeds in [-2**63, 2**64); fold anything bigger into it.
    torch.default_generator.manual_seed(int(seed) % (2**64))
    try:
        yield
    finally:
        torch.set_rng_state(state)


def to_rgb_uint8(img: Image.Image | Tensor) -> Tensor:
    """A PIL image or a (C, H, W) uint8 tensor -> plain uint8 tensor of shape (3, H, W).

    Grayscale inputs are repeated to three channels and an alpha channel is dropped, so that
    every dataset hands the same layout to the model.
    """
    if isinstance(img, Image.Image):
        if img.mode != "RGB":
            img = img.convert("RGB")
        out = TF.pil_to_tensor(img)
    elif isinstance(img, Tensor):
        if img.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 image tensor, got {img.dtype}")
        if img.ndim == 2:
            img = img.unsqueeze(0)
        out = img
    else:
        raise TypeError(f"expected a PIL image or a uint8 tensor, got {type(img).__name__}")
    # tv_tensors.Image subclasses Tensor; hand back a plain tensor so collate and pickling see
    # ordinary tensors.
    out = out.as_subclass(Tensor)
    if out.shape[0] == 1:
        out = out.expand(3, -1, -1)
    elif out.shape[0] == 4:
        out = out[:3]
    elif out.shape[0] != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {tuple(out.shape)}")
    return out.contiguous()


class SeededCrops:
    """Random-resized crops + horizontal flips of one image, a pure function of (image, seed).

    ``plan`` lists the views: (output side, scale range) each. View v draws its box from outputs
    ``v * DRAWS_PER_VIEW ..`` of the seed's SplitMix64 stream (``crops.sample_boxes``:
    torchvision's RandomResizedCrop rule, aspect ratio 3/4..4/3, then a flip with p = 0.5), so a
    view's box depends only on the seed and its place in the plan. Per image (``__call__``, any PIL
    image or uint8 tensor: torchvision's antialiased ``resized_crop``) or for a uint8 batch of one
    size (``batch``: ``crops.resized_crops``, within one grey level of the former) the boxes are
    the same.
    """

    def __init__(self, plan: Sequence[tuple[int, tuple[float, float]]]) -> None:
        self.plan = [(int(side), (float(lo), float(hi))) for side, (lo, hi) in plan]

    def boxes(self, seeds: Sequence[int] | np.ndarray, height: int, width: int) -> list[CropBoxes]:
        """One :class:`~cossl_train.crops.CropBoxes` (B boxes) per view of the plan."""
        return [sample_boxes(seed_uniforms(seeds, v * DRAWS_PER_VIEW, DRAWS_PER_VIEW), height, width, scale)
                for v, (_, scale) in enumerate(self.plan)]

    def views(self, img: Image.Image | Tensor, seed: int | None = None) -> list[Tensor]:
        """Every view of one image: uint8 (3, side, side) each. ``seed=None`` draws a seed from
        torch's global CPU generator."""
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
        h, w = TF.get_size(img)
        out = []
        for (side, _), boxes in zip(self.plan, self.boxes([seed], h, w), strict=True):
            top, left, bh, bw, flip = boxes[0]
            # cropping before the tensor conversion lets PIL resize only the crop of a large photo
            crop = TF.resized_crop(img, top, left, bh, bw, [side, side], antialias=True)
            out.append(to_rgb_uint8(TF.horizontal_flip(crop) if flip else crop))
        return out

    def batch_views(self, images: Tensor, seeds: Sequence[int] | np.ndarray) -> list[Tensor]:
        """Every view of a uint8 batch (B, 3, H, W) with one seed per image: uint8 (B, 3, side, side)
        each, in one batched operation per view."""
        h, w = images.shape[-2:]
        boxes = self.boxes(seeds, h, w)
        out: list[Tensor | None] = [None] * len(self.plan)
        for side in dict.fromkeys(s for s, _ in self.plan):  # views of one side: one call (fewer small ops)
            views = [v for v, (s, _) in enumerate(self.plan) if s == side]
            crops = resized_crops(images.repeat(len(views), 1, 1, 1), CropBoxes.concat([boxes[v] for v in views]),
                                  side)
            for v, crop in zip(views, crops.chunk(len(views)), strict=True):
                out[v] = crop
        return out  # type: ignore[return-value]


class TwoViewCrop(SeededCrops):
    """Geometric half of BYOL's augmentation for both views: one image -> two uint8 crops.

    Each view is an independent random-resized crop (resolution, scale=(c_min, c_max), aspect
    ratio 3/4..4/3, bilinear with antialiasing) followed by a horizontal flip with p=0.5
    (:class:`SeededCrops`). The geometric part is the same for both views in BYOL, so the view
    asymmetry lives in :class:`BatchPhotometric` only.

    Call with a PIL image or a (C, H, W) uint8 tensor; returns two uint8 tensors of shape
    (3, R, R), a pure function of (image, seed). :meth:`batch` crops a uint8 batch.
    """

    #: number of local crops (none)
    n_local = 0

    def __init__(self, cfg: AugmentConfig) -> None:
        if not 0 < cfg.c_min <= cfg.c_max <= 1:
            raise ValueError(f"augment.c_min={cfg.c_min}, c_max={cfg.c_max}: need 0 < c_min <= c_max <= 1")
        self.resolution = int(cfg.resolution)
        self.scale = (float(cfg.c_min), float(cfg.c_max))
        super().__init__([(self.resolution, self.scale)] * 2)

    def __call__(self, img: Image.Image | Tensor, seed: int | None = None) -> tuple[Tensor, Tensor]:
        v1, v2 = self.views(img, seed)
        return v1, v2

    def batch(self, images: Tensor, seeds: Sequence[int] | np.ndarray) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """uint8 (B, 3, H, W) and B seeds -> (view1, view2, ()), uint8 (B, 3, R, R) views."""
        v1, v2 = self.batch_views(images, seeds)
        return v1, v2, ()

    def __repr__(self) -> str:
        return f"TwoViewCrop(resolution={self.resolution}, scale={self.scale})"


def local_resolution(cfg: AugmentConfig) -> int:
    """Side of the local crops: ``augment.local_resolution``, or when 0, DINO's 96/224 of the
    global side, rounded (14 px at 32, 96 at 224), so small images get proportionally small crops."""
    if cfg.local_resolution < 0:
        raise ValueError(f"augment.local_resolution={cfg.local_resolution} must be >= 0 (0 = automatic)")
    if cfg.local_resolution:
        return int(cfg.local_resolution)
    return max(1, int(round(cfg.resolution * LOCAL_RESOLUTION_RATIO)))


class MultiCrop(SeededCrops):
    """Geometric half of multi-crop: one image -> two global crops and M small local crops.

    The global crops are exactly :class:`TwoViewCrop`'s (the first two views of the plan). Each
    local crop is an independent random-resized crop (:func:`local_resolution`,
    scale=``augment.local_crop_scale``, aspect ratio 3/4..4/3, bilinear with antialiasing)
    followed by a horizontal flip with p=0.5; M = ``augment.local_crops``. Defaults follow DINO's
    ResNet-50 recipe (local scale 0.05..0.14, 96 px local crops at 224 px; DINO uses M = 8), except
    that 0 local crops is the default here.

    Call with a PIL image or a (C, H, W) uint8 tensor; returns ``(view1, view2, locals)`` with
    uint8 views (3, R, R) and a tuple of M uint8 tensors (3, r, r). The local crops come after the
    global ones in the seed's stream, so the global views do not depend on M.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        lo, hi = (float(v) for v in cfg.local_crop_scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augment.local_crop_scale=({lo}, {hi}): need 0 < min <= max <= 1")
        if cfg.local_crops < 0:
            raise ValueError(f"augment.local_crops={cfg.local_crops} must be >= 0")
        self.global_crop = TwoViewCrop(cfg)
        self.n_local = int(cfg.local_crops)
        self.local_resolution = local_resolution(cfg)
        self.local_scale = (lo, hi)
        super().__init__([*self.global_crop.plan, *[(self.local_resolution, self.local_scale)] * self.n_local])

    def __call__(
        self, img: Image.Image | Tensor, seed: int | None = None
    ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        v1, v2, *local = self.views(img, seed)
        return v1, v2, tuple(local)

    def batch(self, images: Tensor, seeds: Sequence[int] | np.ndarray) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """uint8 (B, 3, H, W) and B seeds -> (view1, view2, M local views (B, 3, r, r))."""
        v1, v2, *local = self.batch_views(images, seeds)
        return v1, v2, tuple(local)

    def __repr__(self) -> str:
        return (f"MultiCrop(resolution={self.global_crop.resolution}, scale={self.global_crop.scale}, "
                f"local_crops={self.n_local}, local_resolution={self.local_resolution}, "
                f"local_scale={self.local_scale})")


def blur_kernel_size(resolution: int) -> int:
    """Gaussian blur kernel side: about 10% of the image side (BYOL: 23 at 224), odd, at least 3."""
    k = int(round(0.1 * resolution))
    if k % 2 == 0:
        k += 1
    return max(3, k)


def blur_sigma_range(resolution: int) -> tuple[float, float]:
    """BYOL's sigma range (0.1, 2.0) at 224 px, scaled to ``resolution`` so the blur covers the
    same fraction of the image at any resolution."""
    s = resolution / 224.0
    return (0.1 * s, 2.0 * s)


class BatchPhotometric(nn.Module):
    """Photometric half of BYOL's augmentation for one view, batched, per-sample random.

    (B, 3, R, R) uint8 in [0, 255] or float in [0, 1], on any device -> (B, 3, R, R) float32 in
    [0, 1] on the same device. ``view`` (0 or 1) selects the blur and solarize probabilities:
    BYOL's defaults blur view 0 always and view 1 with p=0.1, and solarize only view 1 (p=0.2).
    ``view="local"`` is DINO's local-crop pipeline for the multi-crop views (any side r): the same
    jitter and grayscale, blur with p=``augment.local_blur_p`` (0.5) and no solarisation. Its blur
    has the global views' pixel sigma and kernel (DINO blurs its 96 px crops with the sigma of its
    224 px ones), so a local crop is blurred like the region it was cut from.

    Steps, each with its own per-sample coin flip and parameters:
      * colour jitter with p=jitter_p: torchvision's formulas (kornia ``ColorJitter``), brightness,
        contrast, saturation factors in [1-s, 1+s] and hue shift in [-hue, hue]; the order of the
        four adjustments is drawn once per batch (torchvision draws it per image);
      * grayscale with p=grayscale_p (the gray image repeated on three channels);
      * gaussian blur with p=blur_p[view], kernel :func:`blur_kernel_size`, sigma drawn per sample
        from :func:`blur_sigma_range`;
      * solarize with p=solarize_p[view]: pixels >= 0.5 become 1 - x (threshold exactly 0.5, no
        brightness addition, unlike kornia's defaults which draw both).
    """

    def __init__(self, cfg: AugmentConfig, view: int | str) -> None:
        super().__init__()
        if view not in (0, 1, "local"):
            raise ValueError(f"view must be 0, 1 or 'local', got {view!r}")
        self.view = view
        # resolution of the blur parameters: the global side, also for local crops (see above)
        self.resolution = int(cfg.resolution)
        self.blur_kernel = blur_kernel_size(self.resolution)
        if view == "local":
            blur_p, solarize_p = float(cfg.local_blur_p), 0.0
            # reflect padding needs a kernel no wider than the crop (tiny crops of large images)
            side = local_resolution(cfg)
            self.blur_kernel = max(3, min(self.blur_kernel, side if side % 2 else side - 1))
        else:
            blur_p, solarize_p = float(cfg.blur_p[view]), float(cfg.solarize_p[view])
        jitter = K.ColorJitter(
            brightness=cfg.brightness,
            contrast=cfg.contrast,
            saturation=cfg.saturation,
            hue=cfg.hue,
            p=float(cfg.jitter_p),
        )
        gray = K.RandomGrayscale(p=float(cfg.grayscale_p))
        blur = K.RandomGaussianBlur(
            kernel_size=self.blur_kernel,
            sigma=blur_sigma_range(self.resolution),
            border_type="reflect",
            p=blur_p,
        )
        # kornia's scalar forms are half-widths around 0.5 (threshold) and 0 (addition): 0.0 gives
        # a threshold of exactly 0.5 and an addition of exactly 0.
        solarize = K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p)
        # Kept in a plain tuple, not registered as submodules: ``.to(device)`` on a kornia
        # augmentation moves its random sampling to that device, and we want the parameters
        # always drawn on the CPU (one seed -> the same augmentation on CPU and GPU, and only the
        # CPU generator to seed and restore). They hold no learnable state.
        self.probabilities = {
            "jitter": float(cfg.jitter_p),
            "grayscale": float(cfg.grayscale_p),
            "blur": blur_p,
            "solarize": solarize_p,
        }
        # A step with p = 0 changes no image but kornia still runs it on the whole batch (a blur of
        # every image, say): leave it out.
        self._ops: tuple[nn.Module, ...] = tuple(
            op for op, p in zip((jitter, gray, blur, solarize), self.probabilities.values(), strict=True) if p > 0)

    @property
    def ops(self) -> tuple[nn.Module, ...]:
        """The kornia augmentations in the order they are applied (those with p > 0)."""
        return self._ops

    def forward(self, x: Tensor, seed: int | None = None) -> Tensor:
        """(B, 3, R, R) uint8 or float [0, 1] -> (B, 3, R, R) float32 in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if x.shape[0] == 0:
            return x
        with seeded_cpu_rng(seed):
            for op in self._ops:
                x = op(x)
        # Every kornia step clamps its own output, but blur can leave values a few ulps outside
        # [0, 1]; clamp once so consumers can rely on the range.
        return x.clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        probs = ", ".join(f"{k}_p={v}" for k, v in self.probabilities.items())
        return (
            f"view={self.view}, resolution={self.resolution}, {probs}, "
            f"blur_kernel={self.blur_kernel}, "
            f"blur_sigma=({blur_sigma_range(self.resolution)[0]:.3g}, "
            f"{blur_sigma_range(self.resolution)[1]:.3g})"
        )


class EvalTransform:
    """Deterministic evaluation transform: one image -> uint8 tensor (3, R, R).

    Images larger than R (shorter side > R) are resized so the shorter side is R / 0.875 and
    centre-cropped to R, the usual ImageNet protocol (256 -> 224). Images at or below R have their
    shorter side resized to R (a no-op for CIFAR or the digits at their native size) and are
    centre-cropped to R x R if they are not square.
    """

    def __init__(self, resolution: int, crop_ratio: float = EVAL_CROP_RATIO) -> None:
        self.resolution = int(resolution)
        self.crop_ratio = float(crop_ratio)

    def _resize_and_crop(self, img: Image.Image | Tensor) -> Image.Image | Tensor:
        r = self.resolution
        h, w = TF.get_size(img)
        short = min(h, w)
        target_short = r if short <= r else int(math.floor(r / self.crop_ratio + 0.5))
        if short != target_short:
            img = TF.resize(img, [target_short], antialias=True)
        if TF.get_size(img) != [r, r]:
            img = TF.center_crop(img, [r, r])
        return img

    def __call__(self, img: Image.Image | Tensor) -> Tensor:
        return to_rgb_uint8(self._resize_and_crop(img))

    def batch(self, images: Tensor) -> Tensor:
        """A uint8 batch (B, 3, H, W) of one size -> uint8 (B, 3, R, R), each image exactly as
        ``__call__`` gives it (torch resizes the images of a batch independently)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a uint8 (B, 3, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        return self._resize_and_crop(images).contiguous()

    def __repr__(self) -> str:
        return f"EvalTransform(resolution={self.resolution}, crop_ratio={self.crop_ratio})"


def eval_transform(cfg: AugmentConfig) -> EvalTransform:
    """The evaluation transform at ``cfg.resolution`` (see :class:`EvalTransform`)."""
    return EvalTransform(cfg.resolution)


def describe(cfg: AugmentConfig) -> dict[str, Any]:
    """Effective augmentation settings, for logs (derived values included)."""
    return {
        "resolution": cfg.resolution,
        "crop_scale": (cfg.c_min, cfg.c_max),
        "blur_kernel": blur_kernel_size(cfg.resolution),
        "blur_sigma": blur_sigma_range(cfg.resolution),
        "blur_p": tuple(cfg.blur_p),
        "solarize_p": tuple(cfg.solarize_p),
        "local_crops": cfg.local_crops,
        "local_crop_scale": tuple(cfg.local_crop_scale),
        "local_resolution": local_resolution(cfg),
        "local_blur_p": cfg.local_blur_p,
    }
