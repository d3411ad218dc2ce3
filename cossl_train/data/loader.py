"""Deterministic loading: dataset wrappers (crops, eval transform, subsets), batches, collate and
``build_loader``, a pure function of (seed, epoch) whatever the number of workers. Images held in
memory are cut a whole batch at a time in the loading process; files are decoded and cut per image
by worker processes (docs/training.md, "Augmentations: randomness and resume")."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..augment import EvalTransform, MultiCrop, TwoViewCrop
from .memory import InMemoryImages

__all__ = [
    "LIMIT_SEED",
    "EvalBatch",
    "EvalDataset",
    "PretrainBatch",
    "PretrainDataset",
    "SeededBatchSampler",
    "batched_loader",
    "build_loader",
    "collate_skip_none",
    "limit_indices",
]

#: seed of the fixed subset that ``data.limit`` keeps (the same subset in every run)
LIMIT_SEED = 0

Key = int | tuple[int, int]


def _split_key(key: Key) -> tuple[int, int | None]:
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), None


def _in_memory(base: Dataset) -> bool:
    """Whether ``base`` holds its images as one uint8 (N, 3, H, W) tensor (the embedded datasets)."""
    images = getattr(base, "images", None)
    return (isinstance(base, InMemoryImages) and isinstance(images, Tensor) and images.dtype == torch.uint8
            and images.ndim == 4 and images.shape[1] == 3)


def _positions(keys: Sequence[Key], indices: list[int] | None) -> tuple[list[int], list[int], list[int | None]]:
    """(dataset positions, base indices, crop seeds) of a batch of keys."""
    split = [_split_key(k) for k in keys]
    pos = [i for i, _ in split]
    return pos, [indices[i] for i in pos] if indices is not None else pos, [s for _, s in split]


def limit_indices(n: int, limit: int) -> list[int] | None:
    """The fixed subset ``data.limit`` keeps: ``limit`` of ``n`` indices drawn at random with a
    fixed seed and sorted (the first ``limit`` files would all come from the first classes of a
    class-sorted folder); ``None`` when there is nothing to cut."""
    if limit <= 0 or limit >= n:
        return None
    rng = np.random.default_rng(LIMIT_SEED)
    return sorted(int(i) for i in rng.choice(n, size=limit, replace=False))


# --------------------------------------------------------------------------------------------
# dataset wrappers
# --------------------------------------------------------------------------------------------


class PretrainDataset(Dataset):
    """Two crops of every image of ``base``: samples ``(view1, view2, label)``, and with
    multi-crop ``(view1, view2, label, local_views)``.

    ``view1``, ``view2`` are uint8 (3, R, R) tensors from :class:`~cossl_train.augment.TwoViewCrop`
    (or the global crops of a :class:`~cossl_train.augment.MultiCrop`); ``label`` is the base label
    or -1; ``local_views`` (only when the crop is a MultiCrop with M > 0 local crops) is a tuple of
    M uint8 (3, r, r) tensors. A key ``(index, crop_seed)`` (what :func:`build_loader` passes) makes
    all crops a function of the seed; a plain int index draws from the global CPU generator.
    ``indices`` selects a subset of ``base`` (``data.limit``); ``hidden_labels`` are positions whose
    label reads -1 (the held-out images of ``cossl_train.data.holdout``). Returns ``None`` for an unreadable
    image.
    """

    #: the sampler of :func:`build_loader` hands ``(index, seed)`` keys to datasets that say so
    seeded_keys = True

    def __init__(
        self, base: Dataset, crop: TwoViewCrop | MultiCrop, indices: Sequence[int] | None = None,
        clean: EvalTransform | None = None, hidden_labels: Sequence[int] = (),
    ) -> None:
        self.base = base
        self.crop = crop
        self.indices = None if indices is None else list(indices)
        #: positions whose label reads -1 (held out for evaluation: no probe may train on them)
        self.hidden_labels = frozenset(int(i) for i in hidden_labels)
        #: number of local crops per sample (0 without multi-crop)
        self.n_local = crop.n_local if isinstance(crop, MultiCrop) else 0
        #: with a transform, samples end with the clean (evaluation-resized) image for the online probe
        self.clean = clean
        #: sample layout, used by the collate function when a whole batch is unreadable
        self.n_fields = 5 if clean is not None else 4 if self.n_local else 3

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)  # type: ignore[arg-type]

    def with_clean(self, transform: EvalTransform) -> PretrainDataset:
        """The same samples (same crops for a seed) ending with ``transform(image)``, the clean
        image the online probe trains on: ``(view1, view2, label, local_views or (), clean)``."""
        return PretrainDataset(self.base, self.crop, self.indices, transform, self.hidden_labels)

    @property
    def num_classes(self) -> int | None:
        """Number of classes of a labelled base dataset; None when unlabelled (no online probe)."""
        return len(getattr(self.base, "classes", None) or []) or None

    @property
    def batchable(self) -> bool:
        """Whether :meth:`batch` applies: the base holds its images in memory, all of one size."""
        return _in_memory(self.base)

    def batch(self, keys: Sequence[Key]) -> PretrainBatch:
        """The samples of ``keys`` as one batch, cut in one operation per view
        (``SeededCrops.batch_views``); only for a :attr:`batchable` base. A sample is the same
        whatever batch it is cut in, and equal to ``self[key]``."""
        pos, idx, seeds = _positions(keys, self.indices)
        if any(s is None for s in seeds):
            # unseeded keys draw their seeds from the global generator, as __getitem__ does
            seeds = [s if s is not None else int(torch.randint(0, 2**63 - 1, (1,)).item()) for s in seeds]
        images = self.base.images[idx]  # type: ignore[attr-defined]
        labels = self.base.labels[idx].clone()  # type: ignore[attr-defined]
        if self.hidden_labels:
            labels[torch.tensor([p in self.hidden_labels for p in pos], dtype=torch.bool)] = -1
        v1, v2, local = self.crop.batch(images, seeds)
        clean = self.clean.batch(images) if self.clean is not None else None
        return PretrainBatch(v1, v2, labels, 0, local, clean)

    def __getitem__(self, key: Key) -> tuple[Any, ...] | None:
        i, seed = _split_key(key)
        if self.batchable:  # the batched crop, so that a sample equals its row in any batch
            b = self.batch([key])
            local = tuple(v[0] for v in b.local_views)
            head = (b.view1[0], b.view2[0], int(b.label[0]))
            if self.clean is not None:
                return (*head, local, b.clean[0])
            return (*head, local) if self.n_local else head
        sample = self.base[self.indices[i] if self.indices is not None else i]
        if sample is None:
            return None
        img, label = sample
        label = int(label) if label is not None and i not in self.hidden_labels else -1
        crops = self.crop(img, seed=seed)
        v1, v2 = crops[:2]
        if self.clean is not None:
            return v1, v2, label, tuple(crops[2]) if self.n_local else (), self.clean(img)
        if not self.n_local:
            return v1, v2, label
        return v1, v2, label, crops[2]


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

    @property
    def batchable(self) -> bool:
        """Whether :meth:`batch` applies: images in memory, all of one size, and the evaluation
        transform (which has a batched form)."""
        return _in_memory(self.base) and isinstance(self.transform, EvalTransform)

    def batch(self, keys: Sequence[Key]) -> EvalBatch:
        """The samples of ``keys`` as one batch, transformed in one operation; each image exactly
        as ``self[key]`` gives it. Only for a :attr:`batchable` base."""
        _, idx, _ = _positions(keys, self.indices)
        images = self.transform.batch(self.base.images[idx])  # type: ignore[attr-defined]
        return EvalBatch(images, self.base.labels[idx].clone(), 0)  # type: ignore[attr-defined]

    def __getitem__(self, key: Key) -> tuple[Tensor, int] | None:
        i, _ = _split_key(key)
        sample = self.base[self.indices[i] if self.indices is not None else i]
        if sample is None:
            return None
        img, label = sample
        return self.transform(img), int(label) if label is not None else -1


# --------------------------------------------------------------------------------------------
# batches and collate
# --------------------------------------------------------------------------------------------


class PretrainBatch(NamedTuple):
    """A pre-training batch: two uint8 (B, 3, R, R) views, int64 labels (B,) (-1 = unlabelled),
    the number of samples of this batch dropped as unreadable (B = requested - skipped), and the
    multi-crop local views: M uint8 tensors (B, 3, r, r), one per local crop (empty when off)."""

    view1: Tensor
    view2: Tensor
    label: Tensor
    skipped: int
    local_views: tuple[Tensor, ...] = ()
    #: uint8 (B, 3, R, R): each image resized as the evaluation does (for the online probe), or None
    clean: Tensor | None = None


class EvalBatch(NamedTuple):
    """An evaluation batch: uint8 images (B, 3, R, R), int64 labels (B,), samples skipped."""

    image: Tensor
    label: Tensor
    skipped: int


def collate_skip_none(
    samples: Sequence[tuple[Any, ...] | None], n_fields: int | None = None, n_local: int = 0
) -> PretrainBatch | EvalBatch:
    """Collate, dropping the ``None`` samples of unreadable images and counting them.

    The count travels with the batch (``batch.skipped``) because DataLoader workers are separate
    processes: a counter inside the dataset would stay in the worker. Three-field samples give a
    :class:`PretrainBatch`, four-field samples (with a tuple of local crops) a PretrainBatch with
    ``local_views``, five-field samples (locals, maybe none, then the clean image) one with
    ``clean``, two-field samples an :class:`EvalBatch`. When every sample is unreadable the
    batch is empty (``batch.label.numel() == 0``, images of shape (0, 3, 0, 0), and ``n_local``
    such local views); ``n_fields`` then says which layout to return. The trainer should skip
    empty batches.
    """
    kept = [s for s in samples if s is not None]
    skipped = len(samples) - len(kept)
    empty = torch.empty((0, 3, 0, 0), dtype=torch.uint8)
    if kept:
        cols = default_collate(kept)
        n = len(cols)
    else:
        n = n_fields if n_fields is not None else 3
        no_labels = torch.empty(0, dtype=torch.int64)
        cols = [empty, empty, no_labels] if n >= 3 else [empty, no_labels]
        if n >= 4:
            cols.append([empty] * n_local)
        if n == 5:
            cols.append(empty)
    if n == 3:
        return PretrainBatch(cols[0], cols[1], cols[2], skipped)
    if n == 4:
        # default_collate turns the per-sample tuples of M crops into M stacked (B, 3, r, r) tensors
        return PretrainBatch(cols[0], cols[1], cols[2], skipped, tuple(cols[3]))
    if n == 5:  # the clean image of each sample last
        return PretrainBatch(cols[0], cols[1], cols[2], skipped, tuple(cols[3]), cols[4])
    if n == 2:
        return EvalBatch(cols[0], cols[1], skipped)
    raise ValueError(f"expected samples of 2, 3, 4 or 5 fields, got {n}")


# --------------------------------------------------------------------------------------------
# sampler and loader
# --------------------------------------------------------------------------------------------


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
    another order and other crops. A dataset whose images are in memory (``ds.batchable``) is
    loaded a batch at a time in this process (``ds.batch``) and ``num_workers`` does not apply;
    files are read by ``num_workers`` worker processes. Build a new loader every epoch (workers
    are not persistent).
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
    pin = device is not None and torch.device(device).type == "cuda"
    if getattr(ds, "batchable", False):
        # images in memory: one batched crop per view in this process, no workers (on few cores a
        # worker would compete with the training threads for the same cores)
        return batched_loader(ds, sampler, pin_memory=pin)
    # Worker base seeds come from this generator: the crops do not need them (they use per-sample
    # seeds) but anything else random in a worker is then reproducible too.
    worker_gen = torch.Generator().manual_seed(_mix_seed(seed, epoch, 1))
    return DataLoader(
        ds,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(
            collate_skip_none, n_fields=getattr(ds, "n_fields", None), n_local=getattr(ds, "n_local", 0)
        ),
        pin_memory=pin,
        generator=worker_gen,
        persistent_workers=False,
    )


def batched_loader(ds: Dataset, batches: Iterable[Sequence[Key]], pin_memory: bool = False) -> DataLoader:
    """A loader of a batchable dataset (``ds.batchable``): one ``ds.batch(keys)`` per list of keys
    that ``batches`` yields, in this process.

    >>> from torch.utils.data import BatchSampler, SequentialSampler
    >>> from cossl_train.augment import EvalTransform
    >>> from cossl_train.data import DigitsDataset
    >>> ds = EvalDataset(DigitsDataset("val", 16), EvalTransform(16))
    >>> next(iter(batched_loader(ds, BatchSampler(SequentialSampler(ds), 8, False)))).image.shape
    torch.Size([8, 3, 16, 16])
    """
    return DataLoader(_Batches(ds), sampler=batches, batch_size=None, num_workers=0, collate_fn=_as_is,
                      pin_memory=pin_memory)


class _Batches(Dataset):
    """A batchable dataset seen batch by batch: item ``keys`` is ``ds.batch(keys)``."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __getitem__(self, keys: Sequence[Key]) -> PretrainBatch | EvalBatch:  # type: ignore[override]
        return self.ds.batch(keys)  # type: ignore[attr-defined]


def _as_is(batch: Any) -> Any:
    return batch
