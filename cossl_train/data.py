"""Datasets and deterministic loaders.

Every base dataset returns ``(image, label)`` with ``label = -1`` for unlabelled images, and
``None`` for an image file that cannot be decoded (corrupt or truncated): such samples are dropped
by :func:`collate_skip_none` and counted in the batch (``batch.skipped``), so one bad file never
stops a long run and the trainer can log how many were lost.

Datasets (``data.dataset``):
  * ``digits`` -- the embedded default: scikit-learn's bundled handwritten digits (1797 8x8
    grayscale images, no download), upscaled bilinearly to ``data.digits_size`` and held in memory
    as uint8 RGB; a fixed stratified 80/20 train/val split.
  * ``imagefolder`` -- a folder tree: labelled when ``root`` has class subfolders, unlabelled when
    the images sit directly in ``root``; an optional class list selects a subset of the folders
    (``"imagenet100"`` is the CMC ImageNet-100 list shipped in ``resources/imagenet100.txt``);
    ``data.val_root`` is an optional labelled validation folder.
  * ``cifar10``, ``cifar100``, ``stl10`` -- torchvision, fetched only when ``data.download``.
    STL-10 pre-trains on ``train+unlabeled`` and probes on ``train`` / ``test``.

Builders:
  * :func:`build_pretrain_dataset` -> samples ``(view1 uint8 (3,R,R), view2 uint8 (3,R,R), label)``
  * :func:`build_eval_datasets` -> ``(train, val or None)`` with samples ``(uint8 (3,R,R), label)``
  * :func:`build_loader` -> a DataLoader that is a pure function of (seed, epoch): batches of
    :class:`PretrainBatch` or :class:`EvalBatch`.

Determinism: :func:`build_loader` seeds a generator from (seed, epoch) that draws the shuffling
permutation and one crop seed per sample; the sampler hands ``(index, crop_seed)`` to the
dataset, which crops under that seed (``augment.TwoViewCrop``). The crops therefore do not depend
on the number of workers, on which worker loads a sample, or on anything the process drew before,
and ``skip_batches`` resumes mid-epoch exactly without loading the skipped images. Build a new
loader every epoch (workers are not persistent, so nothing carries over between epochs).
"""

from __future__ import annotations

import functools
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from .augment import EvalTransform, TwoViewCrop, eval_transform
from .config import AugmentConfig, DataConfig

__all__ = [
    "IMG_EXTENSIONS",
    "DigitsDataset",
    "EvalBatch",
    "EvalDataset",
    "ImageFolderDataset",
    "PretrainBatch",
    "PretrainDataset",
    "SeededBatchSampler",
    "build_eval_datasets",
    "build_loader",
    "build_pretrain_dataset",
    "collate_skip_none",
    "limit_indices",
    "read_class_list",
]

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#: root used for the torchvision sets when ``data.root`` is not given
DEFAULT_TORCHVISION_ROOT = "data"

#: fraction of each digit class held out for validation, and the seed of that split
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
#: seed of the fixed subset that ``data.limit`` keeps (the same subset in every run)
LIMIT_SEED = 0

# Errors PIL raises on files it cannot decode (UnidentifiedImageError and "image file is
# truncated" are OSErrors; some plugins raise the others on malformed headers).
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)


# --------------------------------------------------------------------------------------------
# digits (embedded default)
# --------------------------------------------------------------------------------------------


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
def _digits_split() -> dict[str, np.ndarray]:
    """Stratified split of the 1797 digits: per class, a fixed random 20% goes to validation."""
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


class DigitsDataset(Dataset):
    """scikit-learn's handwritten digits as uint8 RGB images, in memory.

    ``split`` is ``"train"`` (1437 images), ``"val"`` (360) or ``"all"`` (1797). Samples are
    ``(uint8 tensor (3, size, size), label in 0..9)``.
    """

    def __init__(self, split: str = "train", size: int = 32) -> None:
        splits = _digits_split()
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

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])


# --------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------


def read_class_list(spec: str) -> list[str]:
    """Class folder names from a file (one per line; blank lines and ``#`` comments ignored).

    ``"imagenet100"`` is the CMC ImageNet-100 list (Tian et al. 2019) shipped with the package.
    """
    if spec == "imagenet100":
        text = resources.files("cossl_train").joinpath("resources/imagenet100.txt").read_text()
        source = "imagenet100"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"class list file not found: {path}")
        text = path.read_text()
        source = str(path)
    names = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"class list {source} is empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"class list {source} repeats {len(dup)} name(s), e.g. {dup[0]}")
    return names


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _images_under(folder: str, recursive: bool) -> list[str]:
    """Sorted image paths under ``folder`` (the order fixes labels and indices across runs)."""
    if not recursive:
        with os.scandir(folder) as it:
            return sorted(e.path for e in it if e.is_file() and _is_image(e.name))
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out.extend(os.path.join(dirpath, f) for f in filenames if _is_image(f))
    return sorted(out)


def _subdirs(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


class ImageFolderDataset(Dataset):
    """A folder of images, labelled by class subfolders or unlabelled.

    Layouts:
      * labelled: ``root/<class>/**/<image>``; labels are the indices of the sorted class names;
      * unlabelled: images directly in ``root`` (no subfolders), every label ``-1``.
    ``labelled=None`` picks the layout from the folder; ``labelled=False`` treats every image
    under ``root`` (recursively) as unlabelled, whatever the subfolders.
    ``classes`` restricts a labelled tree to those folder names (all must exist); the labels then
    index the sorted selection, so an ImageNet-100 subset gets the labels an ImageFolder over a
    copied-out ImageNet-100 tree would give. ``class_to_idx`` instead imposes a given mapping
    (used for a validation folder, so it shares the training folder's labels; its classes may be
    missing from the folder).

    Samples are ``(PIL RGB image, label)``, or ``None`` when the file cannot be decoded (a warning
    is logged once per file and process).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        classes: Sequence[str] | None = None,
        labelled: bool | None = None,
        class_to_idx: dict[str, int] | None = None,
    ) -> None:
        root = os.path.expanduser(os.fspath(root))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder not found: {root}")
        self.root = root
        subdirs = _subdirs(root)
        if labelled is None:
            labelled = bool(subdirs) or classes is not None or class_to_idx is not None
        self.labelled = labelled
        if not labelled:
            if classes is not None or class_to_idx is not None:
                raise ValueError(f"a class list needs class subfolders, but {root} is used unlabelled")
            self.classes: list[str] = []
            self.class_to_idx: dict[str, int] = {}
            self.samples = [(p, -1) for p in _images_under(root, recursive=True)]
        else:
            if class_to_idx is not None:
                mapping = dict(class_to_idx)
                present = [c for c in mapping if c in set(subdirs)]
            else:
                wanted = sorted(classes) if classes is not None else subdirs
                missing = sorted(set(wanted) - set(subdirs))
                if missing:
                    raise FileNotFoundError(
                        f"{len(missing)} of {len(wanted)} listed classes have no folder under {root} "
                        f"(e.g. {missing[0]})"
                    )
                mapping = {c: i for i, c in enumerate(wanted)}
                present = wanted
            self.class_to_idx = mapping
            self.classes = sorted(mapping, key=mapping.__getitem__)
            self.samples = [
                (p, mapping[c]) for c in sorted(present) for p in _images_under(os.path.join(root, c), True)
            ]
        if not self.samples:
            raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) found under {root}")
        self.targets = [label for _, label in self.samples]
        self._reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int] | None:
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                # convert() forces the full decode here, so truncation surfaces inside the try
                img = im.convert("RGB")
        except _DECODE_ERRORS as e:
            if path not in self._reported:
                self._reported.add(path)
                log.warning("skipping unreadable image %s (%s: %s)", path, type(e).__name__, e)
            return None
        return img, label


# --------------------------------------------------------------------------------------------
# torchvision sets
# --------------------------------------------------------------------------------------------

_TV_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10"}


def _torchvision_dataset(name: str, root: str | None, split: str, download: bool) -> Dataset:
    """CIFAR-10/100 (``split`` train/test) or STL-10 (train/test/unlabeled/train+unlabeled)."""
    import torchvision.datasets as tvd

    root = os.path.expanduser(root or DEFAULT_TORCHVISION_ROOT)
    try:
        if name == "cifar10":
            return tvd.CIFAR10(root, train=split == "train", download=download)
        if name == "cifar100":
            return tvd.CIFAR100(root, train=split == "train", download=download)
        if name == "stl10":
            return tvd.STL10(root, split=split, download=download)
    except RuntimeError as e:
        # torchvision's "Dataset not found or corrupted. You can use download=True ..." names
        # neither the set nor the path nor our config key.
        if not download:
            raise FileNotFoundError(
                f"{_TV_NAMES[name]} not found under {root}; set data.download=true to fetch it"
            ) from None
        raise RuntimeError(f"{_TV_NAMES[name]} under {root}: {str(e).splitlines()[0]}") from e
    raise ValueError(f"unknown torchvision dataset {name!r}")


# --------------------------------------------------------------------------------------------
# wrappers: crops / eval transform, data.limit, seeded keys
# --------------------------------------------------------------------------------------------

Key = int | tuple[int, int]


def _split_key(key: Key) -> tuple[int, int | None]:
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), None


def limit_indices(n: int, limit: int) -> list[int] | None:
    """The fixed subset ``data.limit`` keeps: ``limit`` of ``n`` indices drawn at random with a
    fixed seed and sorted (the first ``limit`` files would all come from the first classes of a
    class-sorted folder); ``None`` when there is nothing to cut."""
    if limit <= 0 or limit >= n:
        return None
    rng = np.random.default_rng(LIMIT_SEED)
    return sorted(int(i) for i in rng.choice(n, size=limit, replace=False))


class PretrainDataset(Dataset):
    """Two crops of every image of ``base``: samples ``(view1, view2, label)``.

    ``view1``, ``view2`` are uint8 (3, R, R) tensors from :class:`~cossl_train.augment.TwoViewCrop`;
    ``label`` is the base label or -1. A key ``(index, crop_seed)`` (what :func:`build_loader`
    passes) makes the crops a function of the seed; a plain int index draws from the global CPU
    generator. ``indices`` selects a subset of ``base`` (``data.limit``). Returns ``None`` for an
    unreadable image.
    """

    #: sample layout, used by the collate function when a whole batch is unreadable
    n_fields = 3
    #: the sampler of :func:`build_loader` hands ``(index, seed)`` keys to datasets that say so
    seeded_keys = True

    def __init__(self, base: Dataset, crop: TwoViewCrop, indices: Sequence[int] | None = None) -> None:
        self.base = base
        self.crop = crop
        self.indices = None if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)  # type: ignore[arg-type]

    @property
    def num_classes(self) -> int | None:
        """Number of classes of a labelled base dataset; None when unlabelled (no online probe)."""
        return len(getattr(self.base, "classes", None) or []) or None

    def __getitem__(self, key: Key) -> tuple[Tensor, Tensor, int] | None:
        i, seed = _split_key(key)
        sample = self.base[self.indices[i] if self.indices is not None else i]
        if sample is None:
            return None
        img, label = sample
        v1, v2 = self.crop(img, seed=seed)
        return v1, v2, int(label) if label is not None else -1


class EvalDataset(Dataset):
    """Deterministically resized images of ``base``: samples ``(uint8 (3, R, R), label)``.

    Accepts the same keys as :class:`PretrainDataset` (a seed is ignored: nothing is random).
    """

    n_fields = 2
    seeded_keys = False

    def __init__(self, base: Dataset, transform: EvalTransform, indices: Sequence[int] | None = None) -> None:
        self.base = base
        self.transform = transform
        self.indices = None if indices is None else list(indices)
        self.classes: list[str] = list(getattr(base, "classes", []) or [])

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> tuple[Tensor, int] | None:
        i, _ = _split_key(key)
        sample = self.base[self.indices[i] if self.indices is not None else i]
        if sample is None:
            return None
        img, label = sample
        return self.transform(img), int(label) if label is not None else -1


def _require_root(data_cfg: DataConfig) -> str:
    if not data_cfg.root:
        raise ValueError("data.root must be set for data.dataset=imagefolder")
    return data_cfg.root


def _imagefolder_train(data_cfg: DataConfig) -> ImageFolderDataset:
    classes = read_class_list(data_cfg.class_list) if data_cfg.class_list else None
    return ImageFolderDataset(_require_root(data_cfg), classes=classes)


def build_pretrain_dataset(data_cfg: DataConfig, aug_cfg: AugmentConfig) -> PretrainDataset:
    """The pre-training set: samples ``(view1 uint8 (3,R,R), view2 uint8 (3,R,R), label)``.

    digits: the train split; imagefolder: ``data.root``; CIFAR: the train set; STL-10:
    ``train+unlabeled`` (unlabelled images carry label -1). ``data.limit`` keeps a fixed subset.
    """
    name = data_cfg.dataset
    base: Dataset
    if name == "digits":
        base = DigitsDataset("train", data_cfg.digits_size)
    elif name == "imagefolder":
        base = _imagefolder_train(data_cfg)
    elif name in ("cifar10", "cifar100"):
        base = _torchvision_dataset(name, data_cfg.root, "train", data_cfg.download)
    elif name == "stl10":
        base = _torchvision_dataset(name, data_cfg.root, "train+unlabeled", data_cfg.download)
    else:
        raise ValueError(f"data.dataset={name!r} is not one of digits, imagefolder, {', '.join(_TV_NAMES)}")
    return PretrainDataset(base, TwoViewCrop(aug_cfg), limit_indices(len(base), data_cfg.limit))  # type: ignore[arg-type]


def build_eval_datasets(data_cfg: DataConfig, aug_cfg: AugmentConfig) -> tuple[EvalDataset, EvalDataset | None]:
    """Probe / kNN sets ``(train, val or None)``: samples ``(uint8 (3,R,R), label)``.

    digits: train/val splits; imagefolder: ``data.root`` and ``data.val_root`` (None when not
    given; the validation folder uses the training folder's class indices); CIFAR: train/test;
    STL-10: train/test. ``data.limit`` cuts the training set only, to the same subset as
    :func:`build_pretrain_dataset` where both read the same files.
    """
    name = data_cfg.dataset
    tf = eval_transform(aug_cfg)
    val: Dataset | None
    if name == "digits":
        train: Dataset = DigitsDataset("train", data_cfg.digits_size)
        val = DigitsDataset("val", data_cfg.digits_size)
    elif name == "imagefolder":
        train = _imagefolder_train(data_cfg)
        val = None
        if data_cfg.val_root:
            val = ImageFolderDataset(
                data_cfg.val_root, labelled=True, class_to_idx=train.class_to_idx if train.labelled else None
            )
    elif name in ("cifar10", "cifar100"):
        train = _torchvision_dataset(name, data_cfg.root, "train", data_cfg.download)
        val = _torchvision_dataset(name, data_cfg.root, "test", data_cfg.download)
    elif name == "stl10":
        train = _torchvision_dataset(name, data_cfg.root, "train", data_cfg.download)
        val = _torchvision_dataset(name, data_cfg.root, "test", data_cfg.download)
    else:
        raise ValueError(f"data.dataset={name!r} is not one of digits, imagefolder, {', '.join(_TV_NAMES)}")
    train_ds = EvalDataset(train, tf, limit_indices(len(train), data_cfg.limit))  # type: ignore[arg-type]
    return train_ds, (EvalDataset(val, tf) if val is not None else None)


# --------------------------------------------------------------------------------------------
# batches, collate, sampler, loader
# --------------------------------------------------------------------------------------------


class PretrainBatch(NamedTuple):
    """A pre-training batch: two uint8 (B, 3, R, R) views, int64 labels (B,) (-1 = unlabelled),
    and the number of samples of this batch dropped as unreadable (B = requested - skipped)."""

    view1: Tensor
    view2: Tensor
    label: Tensor
    skipped: int


class EvalBatch(NamedTuple):
    """An evaluation batch: uint8 images (B, 3, R, R), int64 labels (B,), samples skipped."""

    image: Tensor
    label: Tensor
    skipped: int


def collate_skip_none(
    samples: Sequence[tuple[Any, ...] | None], n_fields: int | None = None
) -> PretrainBatch | EvalBatch:
    """Collate, dropping the ``None`` samples of unreadable images and counting them.

    The count travels with the batch (``batch.skipped``) because DataLoader workers are separate
    processes: a counter inside the dataset would stay in the worker. Three-field samples give a
    :class:`PretrainBatch`, two-field samples an :class:`EvalBatch`. When every sample is
    unreadable the batch is empty (``batch.label.numel() == 0``, images of shape (0, 3, 0, 0));
    ``n_fields`` then says which layout to return. The trainer should skip empty batches.
    """
    kept = [s for s in samples if s is not None]
    skipped = len(samples) - len(kept)
    if kept:
        cols = default_collate(kept)
        n = len(cols)
    else:
        n = n_fields if n_fields is not None else 3
        empty = torch.empty((0, 3, 0, 0), dtype=torch.uint8)
        cols = [empty] * (n - 1) + [torch.empty(0, dtype=torch.int64)]
    if n == 3:
        return PretrainBatch(cols[0], cols[1], cols[2], skipped)
    if n == 2:
        return EvalBatch(cols[0], cols[1], skipped)
    raise ValueError(f"expected samples of 2 or 3 fields, got {n}")


def _mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (nearby (seed, epoch) pairs give unrelated streams)."""
    state = np.random.SeedSequence([int(p) % (2**63) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededBatchSampler(Sampler[list[Key]]):
    """Batches of dataset keys, a pure function of ``seed`` (one epoch).

    A generator seeded with ``seed`` draws the permutation (if ``shuffle``) and then one 63-bit
    crop seed per dataset index. With ``with_seeds`` the keys are ``(index, crop_seed)``,
    otherwise plain indices. For distributed training every rank draws the same permutation and
    takes every ``world_size``-th element from ``rank`` on (the tail is dropped with
    ``drop_last``, otherwise padded from the start), as ``DistributedSampler`` does.
    ``skip_batches`` leaves out the first batches of this rank's epoch (exact mid-epoch resume).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        with_seeds: bool = True,
        rank: int = 0,
        world_size: int = 1,
        skip_batches: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.with_seeds = with_seeds
        self.rank = rank
        self.world_size = world_size
        self.skip_batches = max(0, int(skip_batches))

    def _per_rank(self) -> int:
        if self.drop_last:
            return self.n // self.world_size
        return -(-self.n // self.world_size)

    def _batches_per_rank(self) -> int:
        m = self._per_rank()
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def __len__(self) -> int:
        return max(0, self._batches_per_rank() - self.skip_batches)

    def __iter__(self) -> Iterator[list[Key]]:
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        # drawn after the permutation and indexed by dataset index, so a sample's crop seed does not
        # depend on the batch size or the rank that loads it
        crop_seeds = torch.randint(0, 2**63 - 1, (self.n,), generator=g) if self.with_seeds else None
        m = self._per_rank()
        total = m * self.world_size
        if total > self.n:  # pad (not drop_last): repeat from the start, as DistributedSampler
            reps = -(-total // max(self.n, 1))
            order = order.repeat(reps)
        order = order[:total][self.rank :: self.world_size]
        idx = order.tolist()
        seeds = crop_seeds.tolist() if crop_seeds is not None else None
        for b in range(self.skip_batches, self._batches_per_rank()):
            chunk = idx[b * self.batch_size : (b + 1) * self.batch_size]
            if seeds is None:
                yield chunk
            else:
                yield [(i, seeds[i]) for i in chunk]


def build_loader(
    ds: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    num_workers: int,
    drop_last: bool,
    device: str | torch.device | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    skip_batches: int = 0,
) -> DataLoader:
    """A DataLoader whose batches are a pure function of (seed, epoch).

    Batches are :class:`PretrainBatch` (for a :class:`PretrainDataset`) or :class:`EvalBatch`
    (for an :class:`EvalDataset`), with unreadable samples dropped and counted (``skipped``).
    The same (seed, epoch) gives the same batches with any ``num_workers``; another epoch gives
    another order and other crops. Build a new loader every epoch (workers are not persistent).
    ``pin_memory`` is on when ``device`` is CUDA. ``rank``/``world_size`` shard the epoch for
    DDP; ``skip_batches`` drops the first batches of the epoch to resume mid-epoch.
    """
    sampler = SeededBatchSampler(
        len(ds),  # type: ignore[arg-type]
        batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=_mix_seed(seed, epoch, 0),
        with_seeds=bool(getattr(ds, "seeded_keys", False)),
        rank=rank,
        world_size=world_size,
        skip_batches=skip_batches,
    )
    # Worker base seeds come from this generator: the crops do not need them (they use per-sample
    # seeds) but anything else random in a worker is then reproducible too.
    worker_gen = torch.Generator().manual_seed(_mix_seed(seed, epoch, 1))
    pin = device is not None and torch.device(device).type == "cuda"
    return DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(collate_skip_none, n_fields=getattr(ds, "n_fields", None)),
        pin_memory=pin,
        generator=worker_gen,
        persistent_workers=False,
    )
