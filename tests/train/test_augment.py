"""Augmentations: crop geometry, per-view photometric asymmetry, ranges, determinism."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from cossl_train.augment import (
    BatchPhotometric,
    MultiCrop,
    TwoViewCrop,
    blur_kernel_size,
    blur_sigma_range,
    eval_transform,
    local_resolution,
    seeded_cpu_rng,
)
from cossl_train.config import AugmentConfig

# Photometric config with every step off; tests switch on the one they look at.
OFF = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0))


def _coord_image(side: int = 256) -> torch.Tensor:
    """uint8 (3, side, side): channel 0 = column index, channel 1 = row index (side <= 256)."""
    r = torch.arange(side, dtype=torch.uint8)
    return torch.stack(
        [r.expand(side, side), r[:, None].expand(side, side), torch.zeros(side, side, dtype=torch.uint8)]
    )


def test_crop_shape_dtype_tensor_and_pil() -> None:
    crop = TwoViewCrop(AugmentConfig(resolution=24))
    img = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    for inp in (img, Image.fromarray(img.permute(1, 2, 0).numpy()), Image.new("L", (30, 20))):
        v1, v2 = crop(inp, seed=0)
        for v in (v1, v2):
            assert type(v) is torch.Tensor
            assert v.shape == (3, 24, 24) and v.dtype == torch.uint8


def test_full_scale_crop_is_a_resize() -> None:
    """c_min = c_max = 1 on a square image: the crop is the whole image, resized (maybe flipped)."""
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    crop = TwoViewCrop(AugmentConfig(resolution=32, c_min=1.0, c_max=1.0))
    ref = TF.resize(img, [32, 32], antialias=True)
    flipped = 0
    for s in range(20):
        for v in crop(img, seed=s):
            assert torch.equal(v, ref) or torch.equal(v, ref.flip(-1))
            flipped += int(not torch.equal(v, ref))
    assert 0 < flipped < 40  # the flip is random


def _mean_area(c_min: float, n: int = 150) -> float:
    """Mean crop area (fraction of the image) measured from the coordinate ranges in the crops."""
    img = _coord_image()
    crop = TwoViewCrop(AugmentConfig(resolution=32, c_min=c_min))
    areas = []
    for s in range(n):
        v, _ = crop(img, seed=s)
        w = float(v[0].max() - v[0].min() + 1)
        h = float(v[1].max() - v[1].min() + 1)
        areas.append(w * h / 256**2)
    return sum(areas) / n


def test_c_min_controls_crop_area() -> None:
    small, large = _mean_area(0.08), _mean_area(0.7)
    # uniform scale in [c_min, 1] has mean (1 + c_min) / 2: 0.54 and 0.85
    assert 0.4 < small < 0.65
    assert 0.75 < large <= 1.0
    assert large - small > 0.2


def test_crop_seed_determinism_and_global_rng_untouched() -> None:
    crop = TwoViewCrop(AugmentConfig(resolution=16))
    img = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
    state = torch.get_rng_state()
    a, b = crop(img, seed=7), crop(img, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], a[1])  # the two views are independent draws
    assert not torch.equal(crop(img, seed=8)[0], a[0])
    assert torch.equal(torch.get_rng_state(), state)


def test_seeded_cpu_rng_restores_state() -> None:
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    with seeded_cpu_rng(123):
        torch.rand(10)
    assert torch.equal(torch.rand(3), expected)


def test_blur_parameters_scale_with_resolution() -> None:
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(32) == 3 and blur_kernel_size(8) == 3
    assert all(blur_kernel_size(r) % 2 == 1 for r in range(8, 300))
    assert blur_sigma_range(224) == pytest.approx((0.1, 2.0))
    assert blur_sigma_range(112) == pytest.approx((0.05, 1.0))


def test_default_views_are_asymmetric() -> None:
    cfg = AugmentConfig()
    p0, p1 = BatchPhotometric(cfg, 0).probabilities, BatchPhotometric(cfg, 1).probabilities
    assert (p0["blur"], p1["blur"]) == (1.0, 0.1)
    assert (p0["solarize"], p1["solarize"]) == (0.0, 0.2)
    assert p0["jitter"] == p1["jitter"] == 0.8


def test_blur_p1_vs_p0() -> None:
    cfg = AugmentConfig(resolution=96, **{**OFF, "blur_p": (1.0, 0.0)})
    x = torch.randint(0, 256, (16, 3, 96, 96), dtype=torch.uint8)
    xf = x.float() / 255
    blurred, untouched = BatchPhotometric(cfg, 0)(x, seed=0), BatchPhotometric(cfg, 1)(x, seed=0)
    assert torch.equal(untouched, xf)
    change = (blurred - xf).abs().flatten(1).amax(1)
    # sigma ~ U(0.043, 0.86) at 96 px: the smallest sigmas barely move a pixel, most blur visibly
    assert (change > 0.01).float().mean() >= 0.6
    # blurring noise lowers its variance
    assert blurred.var(dim=(1, 2, 3)).mean() < xf.var(dim=(1, 2, 3)).mean()


def test_solarize_closed_form() -> None:
    x = torch.rand(8, 3, 16, 16)
    x[0, 0, 0, 0] = 0.5  # exactly at the threshold: inverted to 0.5 either way
    on = BatchPhotometric(AugmentConfig(resolution=16, **{**OFF, "solarize_p": (0.0, 1.0)}), 1)
    off = BatchPhotometric(AugmentConfig(resolution=16, **{**OFF, "solarize_p": (0.0, 1.0)}), 0)
    assert torch.allclose(on(x, seed=1), torch.where(x >= 0.5, 1 - x, x), atol=1e-7, rtol=0)
    assert torch.equal(off(x, seed=1), x)


def test_grayscale_p1_gives_equal_channels() -> None:
    op = BatchPhotometric(AugmentConfig(resolution=16, **{**OFF, "grayscale_p": 1.0}), 0)
    y = op(torch.rand(4, 3, 16, 16), seed=0)
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])


@pytest.mark.parametrize("view", [0, 1])
def test_photometric_range_dtype_and_determinism(view: int) -> None:
    op = BatchPhotometric(AugmentConfig(resolution=32), view)
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    state = torch.get_rng_state()
    y = op(x, seed=5)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(op(x, seed=5), y)
    assert torch.equal(op(x.float() / 255, seed=5), y)  # uint8 and [0, 1] float inputs agree
    assert not torch.equal(op(x, seed=6), y)
    assert torch.equal(torch.get_rng_state(), state)
    # without a seed it draws from the global generator: reproducible by seeding that
    torch.manual_seed(0)
    a = op(x)
    torch.manual_seed(0)
    assert torch.equal(op(x), a)


def test_photometric_jitter_changes_images() -> None:
    op = BatchPhotometric(AugmentConfig(resolution=16, **{**OFF, "jitter_p": 1.0}), 0)
    x = torch.rand(8, 3, 16, 16)
    y = op(x, seed=0)
    assert ((y - x).abs().flatten(1).amax(1) > 1e-3).all()


def test_photometric_stays_on_cpu_sampling_after_to() -> None:
    op = BatchPhotometric(AugmentConfig(resolution=16), 1).to(torch.float64)  # a no-op for the ops
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(op(x, seed=2), BatchPhotometric(AugmentConfig(resolution=16), 1)(x, seed=2))


def test_eval_transform_sizes() -> None:
    tf = eval_transform(AugmentConfig(resolution=32))
    small = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert torch.equal(tf(small), small)  # already at the resolution: untouched
    assert tf(torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)).shape == (3, 32, 32)
    assert tf(torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)).shape == (3, 32, 32)
    big = Image.new("RGB", (100, 80), (10, 20, 30))
    out = tf(big)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert out[:, 16, 16].tolist() == [10, 20, 30]
    # large image: shorter side -> 32 / 0.875 = 37 then centre crop; compare with that recipe
    img = torch.randint(0, 256, (3, 74, 90), dtype=torch.uint8)
    ref = TF.center_crop(TF.resize(img, [37], antialias=True), [32, 32])
    assert torch.equal(tf(img), ref)


# --------------------------------------------------------------------------------- multi-crop


def _box(v: torch.Tensor) -> tuple[int, int]:
    """(width, height) in source pixels of a crop of :func:`_coord_image` that was upscaled.

    Upscaling (crop side <= output side) with bilinear interpolation keeps the extreme source
    coordinates exactly at the output's border pixels (half-pixel centres clamp to the border), so
    max - min + 1 is the crop's side in source pixels, flipped or not."""
    return int(v[0].max() - v[0].min()) + 1, int(v[1].max() - v[1].min()) + 1


def test_local_resolution_default_scales_with_the_image() -> None:
    assert local_resolution(AugmentConfig(resolution=224)) == 96  # DINO: 96 px local crops at 224
    assert local_resolution(AugmentConfig(resolution=32)) == 14  # round(32 * 96 / 224 = 13.7)
    assert local_resolution(AugmentConfig(resolution=28)) == 12
    assert local_resolution(AugmentConfig(resolution=32, local_resolution=10)) == 10
    with pytest.raises(ValueError, match="augment.local_resolution"):
        local_resolution(AugmentConfig(local_resolution=-1))


def test_multicrop_shapes_and_defaults() -> None:
    cfg = AugmentConfig(resolution=32, local_crops=5)
    assert cfg.local_crop_scale == (0.05, 0.14) and AugmentConfig().local_crops == 0
    crop = MultiCrop(cfg)
    img = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    for inp in (img, Image.fromarray(img.permute(1, 2, 0).numpy())):
        v1, v2, local = crop(inp, seed=0)
        assert v1.shape == v2.shape == (3, 32, 32) and v1.dtype == torch.uint8
        assert len(local) == 5
        assert all(type(v) is torch.Tensor and v.shape == (3, 14, 14) and v.dtype == torch.uint8 for v in local)
    assert MultiCrop(AugmentConfig(resolution=32))(img, seed=0)[2] == ()
    with pytest.raises(ValueError, match="augment.local_crop_scale"):
        MultiCrop(AugmentConfig(local_crops=2, local_crop_scale=(0.3, 0.2)))
    with pytest.raises(ValueError, match="augment.local_crops"):
        MultiCrop(AugmentConfig(local_crops=-1))


def test_crop_scales_lie_in_their_ranges() -> None:
    """Every global crop covers c_min..c_max of the image and every local crop
    local_crop_scale, measured from the pixel coordinates the crops contain."""
    side = 256
    img = _coord_image(side)
    cfg = AugmentConfig(resolution=side, c_min=0.4, c_max=1.0, local_crops=6, local_crop_scale=(0.05, 0.14),
                        local_resolution=96)
    crop = MultiCrop(cfg)
    # the crop sides are rounded to whole pixels: that moves an area by at most ~1/side_min per
    # side (sides >= 49 px here), so 3% covers it
    tol = 0.03
    global_areas, local_areas = [], []
    for s in range(40):
        v1, v2, local = crop(img, seed=s)
        for v in (v1, v2):
            w, h = _box(v)
            global_areas.append(w * h / side**2)
        for v in local:
            w, h = _box(v)
            assert 3 / 4 * (1 - tol) <= w / h <= 4 / 3 * (1 + tol)
            local_areas.append(w * h / side**2)
    assert len(local_areas) == 240
    assert 0.4 * (1 - tol) <= min(global_areas) and max(global_areas) <= 1.0
    assert 0.05 * (1 - tol) <= min(local_areas) and max(local_areas) <= 0.14 * (1 + tol)
    # and they spread over the range (scale uniform in [0.05, 0.14]: mean 0.095)
    assert min(local_areas) < 0.06 and max(local_areas) > 0.13
    assert abs(sum(local_areas) / len(local_areas) - 0.095) < 0.01


def test_multicrop_determinism_and_global_views_unchanged() -> None:
    img = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
    base = TwoViewCrop(AugmentConfig(resolution=16))
    multi = MultiCrop(AugmentConfig(resolution=16, local_crops=4))
    state = torch.get_rng_state()
    for seed in (0, 7):
        a1, a2 = base(img, seed=seed)
        b1, b2, loc = multi(img, seed=seed)
        # local crops are drawn after the global ones: turning them on changes no global view
        assert torch.equal(a1, b1) and torch.equal(a2, b2)
        again = multi(img, seed=seed)[2]
        assert all(torch.equal(x, y) for x, y in zip(loc, again, strict=True))
        assert not torch.equal(loc[0], loc[1])  # independent draws
    assert not torch.equal(multi(img, seed=8)[2][0], multi(img, seed=0)[2][0])
    assert torch.equal(torch.get_rng_state(), state)


def test_local_photometric_is_dinos_local_pipeline() -> None:
    cfg = AugmentConfig(resolution=32)
    local = BatchPhotometric(cfg, view="local")
    assert local.probabilities == {"jitter": 0.8, "grayscale": 0.2, "blur": 0.5, "solarize": 0.0}
    # blurred with the global views' pixel sigma and kernel, whatever the crop side
    assert local.blur_kernel == BatchPhotometric(cfg, 0).blur_kernel == blur_kernel_size(32)
    x = torch.randint(0, 256, (64, 3, 14, 14), dtype=torch.uint8)
    y = local(x, seed=3)
    assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    assert torch.equal(local(x, seed=3), y)
    # blur alone at p = 0.5: about half of the images change
    only_blur = BatchPhotometric(AugmentConfig(resolution=224, **OFF, local_blur_p=0.5), view="local")
    xf = torch.rand(200, 3, 41, 41)
    changed = ((only_blur(xf, seed=0) - xf).abs().flatten(1).amax(1) > 0).float().mean().item()
    assert 0.38 < changed < 0.62  # binomial(200, 0.5): +-3.4 standard deviations
    # never solarised, even when the global views are
    solarizing = AugmentConfig(resolution=16, **{**OFF, "solarize_p": (1.0, 1.0)}, local_blur_p=0.0)
    xs = torch.rand(8, 3, 16, 16)
    assert torch.equal(BatchPhotometric(solarizing, view="local")(xs, seed=1), xs)
    assert not torch.equal(BatchPhotometric(solarizing, view=1)(xs, seed=1), xs)
    # a kernel wider than a tiny local crop is narrowed so reflect padding works
    tiny = BatchPhotometric(AugmentConfig(resolution=224, local_resolution=8, local_blur_p=1.0), view="local")
    assert tiny.blur_kernel == 7 and tiny(torch.rand(2, 3, 8, 8), seed=0).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="view must be 0, 1 or 'local'"):
        BatchPhotometric(cfg, view=2)


def test_steps_with_zero_probability_are_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step with p = 0 changes no image: it is left out (kornia would still run it on every image),
    and the steps with p > 0 still run."""
    import kornia.augmentation as K

    cfg = AugmentConfig(resolution=16, **{**OFF, "jitter_p": 1.0, "solarize_p": (0.0, 0.5)})
    ran: list[str] = []
    for cls in (K.ColorJitter, K.RandomGrayscale, K.RandomGaussianBlur, K.RandomSolarize):
        real = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, *a, _r=real, _n=cls.__name__, **k: (ran.append(_n),
                                                                                               _r(self, *a, **k))[1])
    x = torch.rand(4, 3, 16, 16)
    BatchPhotometric(cfg, 0)(x, seed=0)
    assert ran == ["ColorJitter"]
    ran.clear()
    BatchPhotometric(cfg, 1)(x, seed=0)
    assert ran == ["ColorJitter", "RandomSolarize"]
