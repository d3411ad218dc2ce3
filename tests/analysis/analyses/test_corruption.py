"""Tests for cossl_analysis.analyses.corruption (ImageNet-C corruptions through imagecorruptions)."""

from __future__ import annotations

import inspect
from functools import cache

import cv2
import numpy as np
import pytest
import skimage.data as skimage_data
import torch

from cossl_analysis.analyses import corruption as C

SEVERITIES = (1, 2, 3, 4, 5)


@cache
def natural_image(size: int | tuple[int, int], which: str = "astronaut") -> np.ndarray:
    """A natural photograph from scikit-image's bundled data, area-resized to ``size`` (H, W)."""
    height, width = (size, size) if isinstance(size, int) else size
    full = getattr(skimage_data, which)()
    image = cv2.resize(full, (width, height), interpolation=cv2.INTER_AREA)
    image.setflags(write=False)  # shared between tests through the cache: nobody may modify it
    return image


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_names_match_library_order() -> None:
    library = C.import_imagecorruptions()
    assert len(C.CORRUPTIONS) == 19 and len(set(C.CORRUPTIONS)) == 19
    assert list(C.CORRUPTIONS) == library.get_corruption_names("all")
    assert list(C.COMMON_CORRUPTIONS) == library.get_corruption_names("common")
    assert C.CORRUPTIONS[:3] == ("gaussian_noise", "shot_noise", "impulse_noise")  # noise first
    assert sum(C.CORRUPTION_GROUPS.values(), ()) == C.CORRUPTIONS
    assert set(C.SHIMMED_CORRUPTIONS) <= set(C.CORRUPTIONS)


def test_the_fork_is_installed() -> None:
    library = C.import_imagecorruptions()
    for name in C.SEEDED_CORRUPTIONS:  # imagecorruptions-imaug gives these a seed; 1.1.2 did not
        assert "seed" in inspect.signature(library.corruption_dict[name]).parameters


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_every_corruption_runs_and_keeps_shape_and_dtype(name: str, severity: int) -> None:
    image = natural_image(64)
    out = C.corrupt(image, name, severity, seed=0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


@pytest.mark.parametrize("size", [32, 16, (20, 24), (33, 47)])
def test_small_and_odd_sizes_run(size: int | tuple[int, int]) -> None:
    image = natural_image(size)
    for name in C.CORRUPTIONS:
        for severity in (1, 5):
            out = C.corrupt(image, name, severity, seed=1)
            assert out.shape == image.shape and out.dtype == np.uint8, (name, severity)


def test_below_min_size_round_trip_is_exact() -> None:
    # Upsampling by pixel replication and block-averaging back must not by itself change the image:
    # with brightness at a pixel already at value 255 in all channels nothing can change.
    white = np.full((8, 12, 3), 255, dtype=np.uint8)
    assert np.array_equal(C.corrupt(white, "brightness", 3), white)
    # And a corruption applied at the upsampled size is averaged back to the input's size.
    image = natural_image(16)
    assert C.corrupt(image, "contrast", 1).shape == (16, 16, 3)


def test_min_size_changes_the_working_resolution() -> None:
    image = natural_image(32)
    native = C.corrupt(image, "defocus_blur", 3, seed=0)
    at_224 = C.corrupt(image, "defocus_blur", 3, seed=0, min_size=224)
    assert native.shape == at_224.shape == image.shape
    # A 6 px disk blur is milder relative to a 224 px working image than to the 32 px one.
    assert mean_abs_diff(at_224, image) < mean_abs_diff(native, image)


def test_severity_increases_the_damage() -> None:
    images = [natural_image(32, "astronaut"), natural_image(32, "chelsea")]
    seeds = (0, 1, 2)
    damage = np.zeros((len(C.CORRUPTIONS), len(SEVERITIES)))
    for i, name in enumerate(C.CORRUPTIONS):
        for j, severity in enumerate(SEVERITIES):
            damage[i, j] = np.mean(
                [mean_abs_diff(C.corrupt(x, name, severity, seed=s), x) for x in images for s in seeds]
            )
    for i, name in enumerate(C.CORRUPTIONS):
        assert damage[i, -1] > damage[i, 0], (name, damage[i])
        # Overall upward trend; a few ImageNet-C tables are not monotone step by step (glass_blur's
        # iterations, saturate's factor 0.1 at severity 2 vs 2 at severity 3, frost's random textures).
        assert np.polyfit(SEVERITIES, damage[i], 1)[0] > 0, (name, damage[i])
    average = damage.mean(axis=0)
    assert np.all(np.diff(average) > 0), average


# Corruptions that run the library's own function unchanged: our result must be bit-identical to
# imagecorruptions.corrupt with the same seed (for the seeded two, passed as their ``seed`` argument;
# for the others, numpy's global state seeded with it).
UNPATCHED = [name for name in C.CORRUPTIONS if name not in C.SHIMMED_CORRUPTIONS]


@pytest.mark.parametrize("name", UNPATCHED)
def test_matches_library_for_unpatched_corruptions(name: str) -> None:
    library = C.import_imagecorruptions()
    image = natural_image(64)
    for severity, seed in [(1, 11), (3, 12), (5, 13)]:
        np.random.seed(seed)
        kwargs = {"seed": seed} if name in C.SEEDED_CORRUPTIONS else {}
        expected = library.corrupt(image, severity=severity, corruption_name=name, **kwargs)
        assert np.array_equal(C.corrupt(image, name, severity, seed=seed), expected), severity
        if name not in C.SEEDED_CORRUPTIONS:  # seed=None draws from the global state like the library
            np.random.seed(seed)
            assert np.array_equal(C.corrupt(image, name, severity), expected), severity


def test_gaussian_blur_equals_skimage_with_channel_axis() -> None:
    """Once shimmed (multichannel=True is gone from scikit-image), now the library's own: still the
    reference Gaussian blur of scikit-image over the two image axes."""
    from skimage.filters import gaussian

    image = natural_image(64)
    sigmas = [1, 2, 3, 4, 6]  # imagecorruptions' gaussian_blur table
    for severity, sigma in zip(SEVERITIES, sigmas, strict=True):
        blurred = np.clip(gaussian(image / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255
        assert np.array_equal(C.corrupt(image, "gaussian_blur", severity), blurred.astype(np.uint8))


def test_spatter_never_divides_by_zero() -> None:
    """Severity 1 on a small image often draws an empty liquid layer: the library's own spatter turns
    the image to NaN there (cast to uint8, garbage); the shimmed copy leaves the image as it is."""
    library = C.import_imagecorruptions()
    image = natural_image(32)
    empty = []
    for seed in range(30, 70):  # seeds 35 and 62 draw an empty layer here
        np.random.seed(seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            raw = np.asarray(library.corruptions.spatter(image, 1), dtype=np.float64)
        if np.isnan(raw).any():
            empty.append(seed)
            assert np.array_equal(C.corrupt(image, "spatter", 1, seed=seed), image)
    assert empty, "no seed gave an empty liquid layer; the test needs one"


@pytest.mark.parametrize("name", sorted({*C.SHIMMED_CORRUPTIONS, *C.SEEDED_CORRUPTIONS}))
def test_randomised_corruptions_are_seeded(name: str) -> None:
    image = natural_image(32)
    first = C.corrupt(image, name, 3, seed=5)
    assert np.array_equal(first, C.corrupt(image, name, 3, seed=5))
    assert not np.array_equal(first, C.corrupt(image, name, 3, seed=6))
    np.random.seed(1)  # seed=None: reproducible from numpy's global state, like the other corruptions
    again = C.corrupt(image, name, 3)
    np.random.seed(1)
    assert np.array_equal(again, C.corrupt(image, name, 3))


def test_impulse_noise_hits_the_expected_fraction() -> None:
    image = natural_image(64)
    amounts = [0.03, 0.06, 0.09, 0.17, 0.27]  # imagecorruptions' impulse_noise table
    for severity, amount in zip(SEVERITIES, amounts, strict=True):
        out = C.corrupt(image, "impulse_noise", severity, seed=severity)
        changed = out != image
        assert np.all(np.isin(out[changed], (0, 255)))  # salt and pepper only
        assert abs(changed.mean() - amount) < 0.25 * amount + 0.01, (severity, changed.mean())


def test_seed_does_not_disturb_global_rng() -> None:
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    C.corrupt(natural_image(32), "gaussian_noise", 2, seed=9)
    assert np.array_equal(np.random.rand(3), expected)


def test_bad_name_and_severity() -> None:
    image = natural_image(32)
    with pytest.raises(ValueError, match="unknown corruption 'gauss'; valid names: gaussian_noise, ") as err:
        C.corrupt(image, "gauss", 1)
    assert "\n" not in str(err.value) and all(name in str(err.value) for name in C.CORRUPTIONS)
    for severity in (0, 6, -1, 2.5, True):
        with pytest.raises(ValueError, match="severity must be an integer from 1 to 5") as err:
            C.corrupt(image, "contrast", severity)  # type: ignore[arg-type]
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt_batch(image[None], "nope", 1, workers=1)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt_batch(image[None], "contrast", 9, workers=1)
    with pytest.raises(ValueError, match=r"uint8 numpy array of shape \(H, W, 3\)"):
        C.corrupt(image.astype(np.float32), "contrast", 1)
    with pytest.raises(ValueError, match="min_size"):
        C.corrupt(image, "contrast", 1, min_size=16)


def batch(n: int = 6, size: int = 32) -> np.ndarray:
    names = ["astronaut", "chelsea", "coffee"]
    return np.stack([natural_image(size, names[i % 3]) for i in range(n)])


def test_batch_matches_per_image_and_is_deterministic() -> None:
    images = batch(5)
    out = C.corrupt_batch(images, "shot_noise", 3, seed=4, workers=1)
    assert isinstance(out, np.ndarray) and out.shape == images.shape and out.dtype == np.uint8
    assert np.array_equal(out, C.corrupt_batch(images, "shot_noise", 3, seed=4, workers=1))
    assert not np.array_equal(out, C.corrupt_batch(images, "shot_noise", 3, seed=5, workers=1))
    # Image i depends on (seed, i) only: a prefix of the batch gives a prefix of the result.
    assert np.array_equal(out[:2], C.corrupt_batch(images[:2], "shot_noise", 3, seed=4, workers=1))
    # Different images of the batch get different noise.
    same = np.stack([images[0]] * 2)
    pair = C.corrupt_batch(same, "gaussian_noise", 1, seed=0, workers=1)
    assert not np.array_equal(pair[0], pair[1])


def test_batch_with_worker_processes_equals_serial() -> None:
    images = batch(8)
    serial = C.corrupt_batch(images, "glass_blur", 2, seed=3, workers=1)
    try:
        parallel = C.corrupt_batch(images, "glass_blur", 2, seed=3, workers=2)
        assert np.array_equal(serial, parallel)
        # The pool is kept for the next call (a sweep makes 95 of them per dataset).
        parallel_fog = C.corrupt_batch(images, "fog", 1, seed=3, workers=2)
        assert np.array_equal(parallel_fog, C.corrupt_batch(images, "fog", 1, seed=3, workers=1))
    finally:
        C.shutdown_workers()


def test_batch_accepts_torch_nchw() -> None:
    images = batch(3)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out = C.corrupt_batch(tensor, "jpeg_compression", 4, seed=0, workers=1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == tensor.shape
    expected = C.corrupt_batch(images, "jpeg_compression", 4, seed=0, workers=1)
    assert np.array_equal(out.permute(0, 2, 3, 1).numpy(), expected)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        C.corrupt_batch(tensor.float(), "contrast", 1, workers=1)


def test_cache_hit_skips_recomputation(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = batch(4)
    first = C.corrupt_batch(images, "fog", 2, seed=1, workers=1, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and C.dataset_fingerprint(images) in files[0].name and "_fog_s2_" in files[0].name

    def must_not_run(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("cache miss: corruption recomputed")

    monkeypatch.setattr(C, "_run_corruptions", must_not_run)
    again = C.corrupt_batch(images, "fog", 2, seed=1, workers=1, cache_dir=tmp_path)
    assert np.array_equal(again, first)
    # Any other key (severity, seed, data) is a miss.
    for kwargs in (dict(severity=3, seed=1), dict(severity=2, seed=2)):
        with pytest.raises(AssertionError, match="cache miss"):
            C.corrupt_batch(images, "fog", workers=1, cache_dir=tmp_path, **kwargs)
    with pytest.raises(AssertionError, match="cache miss"):
        C.corrupt_batch(images[::-1].copy(), "fog", 2, seed=1, workers=1, cache_dir=tmp_path)
    # A damaged cache file is recomputed, not trusted.
    monkeypatch.undo()
    files[0].write_bytes(b"not an npy file")
    assert np.array_equal(C.corrupt_batch(images, "fog", 2, seed=1, workers=1, cache_dir=tmp_path), first)
