"""ImageNet-C corruptions (the functions of ``imagecorruptions-imaug`` 1.1.5, not re-implemented),
seeded per image, run by a kept-alive worker pool and cached on disk; and the corruption summary of
one model. docs/analysis.md: installing it, the spatter shim, small images, randomness.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import math
import multiprocessing
import os
import threading
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cossl_train.atomic import atomic_write

if TYPE_CHECKING:  # torch is only needed when the caller hands us tensors
    import torch

__all__ = [
    "COMMON_CORRUPTIONS",
    "CORRUPTIONS",
    "CORRUPTION_GROUPS",
    "EXTRA_CORRUPTIONS",
    "SEEDED_CORRUPTIONS",
    "SEVERITIES",
    "SHIMMED_CORRUPTIONS",
    "CorruptionResult",
    "corrupt",
    "corrupt_batch",
    "corruption_set_text",
    "corruption_summary",
    "corruption_sweep",
    "dataset_fingerprint",
    "import_imagecorruptions",
    "shutdown_workers",
]

# The 15 ImageNet-C corruptions in the benchmark's canonical order (noise first), then the 4 extra
# "validation" corruptions of Hendrycks & Dietterich. Same order as imagecorruptions' 'all' subset.
COMMON_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS: tuple[str, ...] = COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS

CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "noise": COMMON_CORRUPTIONS[0:3],
    "blur": COMMON_CORRUPTIONS[3:7],
    "weather": COMMON_CORRUPTIONS[7:11],
    "digital": COMMON_CORRUPTIONS[11:15],
    "extra": EXTRA_CORRUPTIONS,
}

# Corruptions that run a shimmed copy of the library function, and why (docs/analysis.md, "Image corruptions").
SHIMMED_CORRUPTIONS: dict[str, str] = {
    "spatter": "np.max of an empty liquid layer is 0 and m /= np.max(m) turns the image to NaN (seen on "
    "small images at severity 1): a zero maximum divides by 1 instead, leaving the layer empty",
}
#: corruptions that take a ``seed`` argument (their own generators ignore numpy's global state)
SEEDED_CORRUPTIONS: tuple[str, ...] = ("impulse_noise", "glass_blur")
INSTALL = "pip uninstall -y imagecorruptions; pip install --no-deps imagecorruptions-imaug==1.1.5"

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
MIN_LIBRARY_SIZE = 32  # imagecorruptions.corrupt refuses images below 32 px

# Bump when anything changes what a (images, name, severity, seed, min_size) tuple maps to, so
# stale cache files are never read back.
_CACHE_VERSION = 3  # 3: imagecorruptions-imaug, seeded impulse noise and glass blur


# --------------------------------------------------------------------------------------------
# Importing imagecorruptions
# --------------------------------------------------------------------------------------------


@functools.cache
def import_imagecorruptions() -> types.ModuleType:
    """Import and return the ``imagecorruptions`` package of ``imagecorruptions-imaug`` 1.1.5.

    Raises ImportError (one line, with the install command) when it is missing, or when the 2020
    ``imagecorruptions`` 1.1.2 is installed in its place (its ``glass_blur`` takes no seed).
    """
    try:
        module = importlib.import_module("imagecorruptions")
    except ModuleNotFoundError as err:
        raise ImportError(f"cossl_analysis.corruptions needs imagecorruptions-imaug and OpenCV ({err}); "
                          f"install with `{INSTALL}`") from err
    if "seed" not in inspect.signature(module.corruption_dict["glass_blur"]).parameters:
        raise ImportError(f"the installed imagecorruptions ({module.__file__}) is not the imagecorruptions-imaug "
                          f"fork this package needs; replace it with `{INSTALL}`")
    return module


class _ModuleProxy(types.ModuleType):
    """A module look-alike: given attributes first, everything else from the wrapped module."""

    def __init__(self, wrapped: types.ModuleType, **overrides: Any) -> None:
        super().__init__(wrapped.__name__)
        self.__dict__.update(vars(wrapped))  # direct hits, no __getattr__ call on hot paths
        self.__dict__.update(overrides)
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:  # lazily provided attributes of the wrapped module
        return getattr(self._wrapped, name)


def _max_never_zero(a: Any, *args: Any, **kwargs: Any) -> Any:
    """``np.max`` for spatter's normalisation, where it is only ever a divisor: 0 becomes 1."""
    m = np.max(a, *args, **kwargs)
    return np.where(m == 0, 1, m) if isinstance(m, np.ndarray) else (m if m != 0 else 1)


@functools.cache
def _spatter() -> Callable[[Any, int], Any]:
    """The library's ``spatter`` (same code object) over a copy of its globals whose ``np.max`` never
    returns 0 (docs/analysis.md)."""
    original = import_imagecorruptions().corruptions.spatter
    namespace = {**original.__globals__, "np": _ModuleProxy(np, max=_max_never_zero)}
    clone = types.FunctionType(original.__code__, namespace, original.__name__, original.__defaults__,
                               original.__closure__)
    clone.__kwdefaults__ = original.__kwdefaults__
    return clone


def _corruption_function(name: str) -> Callable[..., Any]:
    """The function implementing ``name``: the library's own, or its shimmed copy."""
    return _spatter() if name == "spatter" else import_imagecorruptions().corruption_dict[name]


# --------------------------------------------------------------------------------------------
# Single images
# --------------------------------------------------------------------------------------------


def _check_name_severity(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(CORRUPTIONS)}")
    # bool is an int subclass; True would silently mean severity 1.
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}")


def _check_min_size(min_size: int) -> None:
    if min_size < MIN_LIBRARY_SIZE:
        raise ValueError(f"min_size must be at least {MIN_LIBRARY_SIZE} (imagecorruptions' minimum), got {min_size}")


@contextlib.contextmanager
def _seeded_global_numpy(seed: int | None) -> Iterator[None]:
    """Seed numpy's global RNG (which imagecorruptions uses) and restore the caller's state after."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _corrupt_unchecked(image: np.ndarray, name: str, severity: int, seed: int | None, min_size: int) -> np.ndarray:
    """Corrupt one contiguous HxWx3 uint8 image (arguments already validated)."""
    from PIL import Image

    height, width = image.shape[:2]
    # Integer factor so that nearest upsampling followed by block averaging is exactly the identity.
    factor = max(1, math.ceil(min_size / min(height, width)))
    work = image if factor == 1 else np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    with _seeded_global_numpy(seed):
        # impulse_noise and glass_blur seed their own generators: with the call's seed, or one drawn
        # from the (seeded) global state, like every other corruption draws from it.
        kwargs = {}
        if name in SEEDED_CORRUPTIONS:
            kwargs["seed"] = int(seed) if seed is not None else int(np.random.randint(0, 2**31 - 1))
        # The library functions take PIL images (jpeg_compression and pixelate need one).
        result = _corruption_function(name)(Image.fromarray(work), severity, **kwargs)
    out = np.asarray(result, dtype=np.float64)
    if out.shape != work.shape:
        raise RuntimeError(f"{name} returned shape {out.shape} for an input of shape {work.shape}")
    if factor > 1:
        out = out.reshape(height, factor, width, factor, 3).mean(axis=(1, 3))
    # Truncating cast, like imagecorruptions.corrupt's np.uint8(...), so results match the library.
    return np.clip(out, 0, 255).astype(np.uint8)


def corrupt(
    image: np.ndarray, name: str, severity: int, *, seed: int | None = None, min_size: int = MIN_LIBRARY_SIZE
) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1-5) to one image.

    Args:
        image: uint8 array of shape (H, W, 3), RGB.
        name: one of ``CORRUPTIONS``.
        severity: integer from 1 to 5.
        seed: seeds numpy's global RNG for this call (the caller's RNG state is restored) and is the
            ``seed`` of ``impulse_noise`` and ``glass_blur``; ``None`` draws from the global state as
            ``imagecorruptions.corrupt`` does (so that, but for those two, ``np.random.seed(s);
            imagecorruptions.corrupt(...)`` and ``corrupt(..., seed=s)`` agree).
        min_size: images whose shorter side is below this are processed at an integer multiple of
            their size and averaged back (docs/analysis.md); at least 32.

    Returns:
        The corrupted image, uint8 with the shape of ``image``.
    """
    _check_name_severity(name, severity)
    _check_min_size(min_size)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be a uint8 numpy array of shape (H, W, 3), got "
            f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        )
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    return _corrupt_unchecked(np.ascontiguousarray(image), name, int(severity), seed, min_size)


# --------------------------------------------------------------------------------------------
# Batches: per-image seeds, worker processes, on-disk cache
# --------------------------------------------------------------------------------------------


def _image_seed(seed: int, index: int) -> int:
    """Seed of image ``index``: depends on (seed, index) only, not on batching or worker count."""
    return int(np.random.SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(1)[0])


def _corrupt_chunk(
    images: np.ndarray, seeds: list[int], name: str, severity: int, min_size: int
) -> np.ndarray:
    """Corrupt a stack of HxWx3 images, image ``i`` seeded with ``seeds[i]``."""
    out = np.empty_like(images)
    for i, (image, image_seed) in enumerate(zip(images, seeds, strict=True)):
        out[i] = _corrupt_unchecked(np.ascontiguousarray(image), name, severity, image_seed, min_size)
    return out


def _worker_init() -> None:
    """Per worker process: one OpenCV thread (the processes already use every core)."""
    import cv2

    cv2.setNumThreads(1)
    import_imagecorruptions()  # pay the import once per worker, not inside the first task


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_mp_context() -> str:
    # Not fork: a parent that already ran OpenCV/OpenMP/torch thread pools can deadlock forked
    # children. forkserver forks from a clean server process; spawn is the portable fallback.
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


# One pool kept alive between calls: a sweep makes 19 x 5 calls per dataset, and a fresh worker
# has to import numpy/OpenCV/scikit-image/imagecorruptions (and whatever the package __init__
# imports) before its first image, which costs seconds per call on a loaded machine.
_POOL: ProcessPoolExecutor | None = None
_POOL_KEY: tuple[int, str] | None = None
_POOL_LOCK = threading.Lock()


def _get_pool(workers: int, method: str) -> ProcessPoolExecutor:
    """The shared pool with ``workers`` processes started by ``method``, created on first use."""
    global _POOL, _POOL_KEY
    with _POOL_LOCK:
        if _POOL is None or _POOL_KEY != (workers, method):
            if _POOL is not None:
                _POOL.shutdown(wait=True)
            context = multiprocessing.get_context(method)
            _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)
            _POOL_KEY = (workers, method)
        return _POOL


def shutdown_workers() -> None:
    """Stop the worker processes that ``corrupt_batch`` keeps alive between calls (if any)."""
    global _POOL, _POOL_KEY
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL, _POOL_KEY = None, None


def dataset_fingerprint(images: np.ndarray) -> str:
    """Content hash (hex) of a uint8 image stack, used to key the corruption cache."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{images.dtype.str}{images.shape}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def _as_nhwc(images: Any) -> tuple[np.ndarray, bool]:
    """(N, H, W, 3) uint8 numpy view/copy of ``images`` and whether the input was a torch tensor."""
    is_torch = type(images).__module__.startswith("torch")
    if is_torch:
        import torch

        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"a torch batch must be uint8 of shape (N, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        array = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
    else:
        array = images
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
            raise ValueError(
                f"a numpy batch must be uint8 of shape (N, H, W, 3), got "
                f"{type(array).__name__} {getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}"
            )
        array = np.ascontiguousarray(array)
    if array.shape[0] > 0 and min(array.shape[1:3]) < 1:
        raise ValueError(f"images must not be empty, got shape {array.shape}")
    return array, is_torch


def _cache_path(
    cache_dir: str | os.PathLike[str], fingerprint: str, name: str, severity: int, seed: int, min_size: int
) -> Path:
    filename = f"{fingerprint}_{name}_s{severity}_seed{seed}_min{min_size}_v{_CACHE_VERSION}.npy"
    return Path(cache_dir) / filename


def _load_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array at ``path`` if present and of the expected shape, else None."""
    if not path.is_file():
        return None
    try:
        cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError):  # truncated or foreign file: recompute and overwrite
        return None
    if cached.dtype != np.uint8 or cached.shape != shape:
        return None
    return cached


def corrupt_batch(
    images: np.ndarray | torch.Tensor,
    name: str,
    severity: int,
    seed: int = 0,
    workers: int | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    min_size: int = MIN_LIBRARY_SIZE,
    mp_context: str | None = None,
    progress: bool = False,
) -> np.ndarray | torch.Tensor:
    """Corrupt a batch of images, in parallel, deterministically, optionally cached on disk.

    Args:
        images: uint8 numpy array (N, H, W, 3) or uint8 torch tensor (N, 3, H, W).
        name: one of ``CORRUPTIONS``.
        severity: integer from 1 to 5.
        seed: image ``i`` is corrupted with numpy's global RNG seeded from ``(seed, i)``; the result
            is the same for any ``workers`` and any batching of the same images.
        workers: worker processes; default: the CPUs this process may use. ``1`` runs in-process.
            The pool is kept alive for later calls (``shutdown_workers`` stops it).
        cache_dir: if given, the result is stored there as one ``.npy`` per (dataset fingerprint,
            name, severity, seed, min_size) and read back on later calls (e.g. for the next
            checkpoint) instead of being recomputed.
        min_size: see ``corrupt``.
        mp_context: multiprocessing start method; default ``forkserver`` (``spawn`` where absent).
            As with any process pool, scripts must guard their entry point with
            ``if __name__ == "__main__":``.
        progress: show a tqdm bar over chunks.

    Returns:
        The corrupted images in the input's type and layout (numpy NHWC or torch NCHW, on CPU).
    """
    _check_name_severity(name, severity)
    _check_min_size(min_size)
    severity = int(severity)
    array, is_torch = _as_nhwc(images)

    cached: np.ndarray | None = None
    path: Path | None = None
    if cache_dir is not None:
        path = _cache_path(cache_dir, dataset_fingerprint(array), name, severity, seed, min_size)
        cached = _load_cached(path, array.shape)
    if cached is not None:
        result = cached
    else:
        result = _run_corruptions(array, name, severity, seed, workers, min_size, mp_context, progress)
        if path is not None:
            atomic_write(path, lambda handle: np.save(handle, result))

    if is_torch:
        import torch

        return torch.from_numpy(np.ascontiguousarray(result)).permute(0, 3, 1, 2).contiguous()
    return result


def _run_corruptions(
    array: np.ndarray,
    name: str,
    severity: int,
    seed: int,
    workers: int | None,
    min_size: int,
    mp_context: str | None,
    progress: bool,
) -> np.ndarray:
    """Corrupt every image of an NHWC stack, serially or over a process pool."""
    from tqdm.auto import tqdm

    n = array.shape[0]
    seeds = [_image_seed(seed, i) for i in range(n)]
    workers = _default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 or n <= 1:
        chunk = max(1, math.ceil(n / 20)) if progress else max(n, 1)
        parts = []
        for start in tqdm(range(0, n, chunk), disable=not progress, desc=f"{name} s{severity}"):
            stop = start + chunk
            parts.append(_corrupt_chunk(array[start:stop], seeds[start:stop], name, severity, min_size))
        return np.concatenate(parts) if parts else array.copy()

    # A few chunks per worker balance the load (glass_blur is ~50x slower than contrast) while
    # keeping the pickling overhead of many tiny tasks away.
    chunk = max(1, math.ceil(n / (workers * 4)))
    pool = _get_pool(workers, mp_context or _default_mp_context())
    out = np.empty_like(array)
    try:
        futures = {
            pool.submit(
                _corrupt_chunk, array[start : start + chunk], seeds[start : start + chunk], name, severity, min_size
            ): start
            for start in range(0, n, chunk)
        }
        bar = tqdm(as_completed(futures), total=len(futures), disable=not progress, desc=f"{name} s{severity}")
        for future in bar:
            start = futures[future]
            part = future.result()
            out[start : start + part.shape[0]] = part
    except BrokenProcessPool:
        shutdown_workers()  # a worker died (e.g. out of memory): start afresh on the next call
        raise
    return out


# --------------------------------------------------------------------------------------------
# The summary of one model
# --------------------------------------------------------------------------------------------


@dataclass
class CorruptionResult:
    """Clean and corrupted top-1 of one model: per (corruption, severity), per corruption, per
    severity over the same ImageNet-C corruptions as the mean (``by_severity``; over the extra ones
    when no ImageNet-C corruption was swept), the mean over the ImageNet-C corruptions swept
    (``mean_corruption_accuracy``), the mean over the extra ones beside it (and per severity,
    ``extra_by_severity``), and ``relative_drop`` = (clean - that mean) / clean."""

    clean: float
    corruption: dict[str, dict[int, float]]
    by_name: dict[str, float]
    by_severity: dict[int, float]
    mean_corruption_accuracy: float | None
    extra_corruption_accuracy: float | None
    relative_drop: float | None
    extra_by_severity: dict[int, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CorruptionResult:
        """Rebuild from ``to_dict()`` or its JSON (severity keys as strings)."""
        def sev(m: Mapping[Any, float] | None) -> dict[int, float] | None:
            return None if m is None else {int(k): float(v) for k, v in m.items()}

        return cls(clean=float(d["clean"]),
                   corruption={n: sev(p) or {} for n, p in d["corruption"].items()},
                   by_name={n: float(v) for n, v in d["by_name"].items()}, by_severity=sev(d["by_severity"]) or {},
                   mean_corruption_accuracy=d["mean_corruption_accuracy"],
                   extra_corruption_accuracy=d["extra_corruption_accuracy"], relative_drop=d["relative_drop"],
                   extra_by_severity=sev(d.get("extra_by_severity")))


def corruption_summary(clean: float, accuracy: Mapping[str, Mapping[int, float]]) -> CorruptionResult:
    """:class:`CorruptionResult` from the clean top-1 and the top-1 per corruption and severity."""
    acc = {name: dict(per) for name, per in accuracy.items()}
    severities = list(next(iter(acc.values()))) if acc else []
    common = [a for name, per in acc.items() if name in COMMON_CORRUPTIONS for a in per.values()]
    extra = [a for name, per in acc.items() if name not in COMMON_CORRUPTIONS for a in per.values()]
    mca = float(np.mean(common)) if common else None
    common_names = [n for n in acc if n in COMMON_CORRUPTIONS]
    extra_names = [n for n in acc if n not in COMMON_CORRUPTIONS]

    def per_severity(names: list[str]) -> dict[int, float]:
        return {s: float(np.mean([acc[n][s] for n in names])) for s in severities}

    return CorruptionResult(
        clean=clean, corruption=acc,
        by_name={n: float(np.mean(list(p.values()))) for n, p in acc.items()},
        # over the same corruptions as the mean, so the curve and the mean agree
        by_severity=per_severity(common_names or extra_names),
        mean_corruption_accuracy=mca,
        extra_corruption_accuracy=float(np.mean(extra)) if extra else None,
        relative_drop=(clean - mca) / clean if mca is not None and clean > 0 else None,
        extra_by_severity=per_severity(extra_names) if extra_names else None)


def corruption_set_text(names: Sequence[str], severities: Sequence[int]) -> str:
    """The ImageNet-C corruptions among ``names`` and the severities, in words: "the 15 ImageNet-C
    corruptions, severities 1-5", "3 of the 15 (noise), severity 3"."""
    common = [n for n in COMMON_CORRUPTIONS if n in names]
    if not common:
        which = "none of the 15 ImageNet-C corruptions"
    elif len(common) == len(COMMON_CORRUPTIONS):
        which = "the 15 ImageNet-C corruptions"
    else:
        parts, left = [], list(common)
        for group, members in CORRUPTION_GROUPS.items():
            if group != "extra" and all(m in left for m in members):
                parts.append(group)
                left = [n for n in left if n not in members]
        which = f"{len(common)} of the 15 ImageNet-C corruptions ({', '.join(parts + left)})"
    sev = sorted(int(s) for s in severities)
    if len(sev) == 1:
        levels = f"severity {sev[0]}"
    elif sev == list(range(sev[0], sev[-1] + 1)):
        levels = f"severities {sev[0]}-{sev[-1]}"
    else:
        levels = "severities " + ", ".join(map(str, sev))
    return f"{which}, {levels}"


def corruption_sweep(model: Any, probe: Any, images: Any, labels: Any, corruptions: Sequence[str] = CORRUPTIONS,
                     severities: Sequence[int] = SEVERITIES, seed: int = 0, workers: int | None = None,
                     cache_dir: str | os.PathLike[str] | None = None, min_size: int = MIN_LIBRARY_SIZE,
                     batch_size: int = 256, progress: bool = False) -> CorruptionResult:
    """Clean and corrupted top-1 of ``probe(pool(model(x)))`` (or of ``model``, a classifier, when
    ``probe`` is None) as ``cossl-analysis corruption`` computes them: the same images corrupted by
    :func:`corrupt_batch` (seeded per image) for every (corruption, severity), summarised by
    :func:`corruption_summary`. ``images``: uint8 (N, 3, H, W), or float in [0, 1] (rounded to uint8,
    what corruptions work on)."""
    import torch

    from cossl_analysis.analyses._common import check_model
    from cossl_analysis.analyses.accuracy import ProbeClassifier, classifier_accuracy

    check_model(model, images)
    if images.dtype != torch.uint8:
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    classifier = model if probe is None else ProbeClassifier(model, probe)
    for name in corruptions:
        _check_name_severity(name, int(severities[0]) if severities else 0)
    clean = classifier_accuracy(classifier, images, labels, batch_size)
    accuracy = {name: {int(s): classifier_accuracy(classifier, corrupt_batch(
        images, name, int(s), seed=seed, workers=workers, cache_dir=cache_dir, min_size=min_size, progress=progress),
        labels, batch_size) for s in severities} for name in corruptions}
    return corruption_summary(clean, accuracy)
