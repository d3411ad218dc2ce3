"""The held-out split of a dataset without a validation split (an image folder without
``data.val_root``): about ``HOLDOUT`` of its images, chosen by a hash of each file's path relative to
the folder, so the same images are held out whatever the seed, the order of the files or the other
files present. Every probe (the online one, ``cossl-train linear-probe``, kNN, the probes the
analyses train) trains on the rest only, and the evaluations and analyses score the held-out ones.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from torch.utils.data import Dataset

__all__ = ["HOLDOUT", "held_out", "held_out_positions", "sample_key"]

#: fraction of the images held out
HOLDOUT = 0.1


def sample_key(base: Dataset, index: int) -> str:
    """What identifies image ``index`` of ``base``: its file path relative to the dataset's root
    (with ``/``), or its index for a dataset that does not read files."""
    samples = getattr(base, "samples", None)
    root = getattr(base, "root", None)
    if samples is not None and root is not None:
        return os.path.relpath(samples[index][0], root).replace(os.sep, "/")
    return f"#{index}"


def _unit(key: str) -> float:
    """The key hashed to [0, 1) (blake2b: the same on every machine and Python run)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def held_out(key: str, fraction: float = HOLDOUT) -> bool:
    """Whether the image with ``key`` (:func:`sample_key`) is held out."""
    return _unit(key) < fraction


def held_out_positions(base: Dataset, indices: Sequence[int] | None = None,
                       fraction: float = HOLDOUT) -> list[int]:
    """Positions (within ``indices``, or within ``base`` when None) of the held-out images: those
    whose key hashes below ``fraction``, or the one with the smallest hash when no image does
    (a folder of a handful of images still gets one)."""
    order = list(range(len(base))) if indices is None else list(indices)  # type: ignore[arg-type]
    units = [_unit(sample_key(base, i)) for i in order]
    out = [p for p, u in enumerate(units) if u < fraction]
    if not out and units:
        out = [min(range(len(units)), key=units.__getitem__)]
    return out
