"""CIFAR-10/100 and STL-10 through torchvision, fetched only when ``data.download`` is set."""

from __future__ import annotations

import os

from torch.utils.data import Dataset

from ..errors import DataError

__all__ = ["DEFAULT_TORCHVISION_ROOT", "TORCHVISION_SETS", "torchvision_dataset"]

#: root used for the torchvision sets when ``data.root`` is not given
DEFAULT_TORCHVISION_ROOT = "data"

#: ``data.dataset`` names served by torchvision, with their display names
TORCHVISION_SETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10"}


def torchvision_dataset(name: str, root: str | None, split: str, download: bool) -> Dataset:
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
                f"{TORCHVISION_SETS[name]} not found under {root}; set data.download=true to fetch it"
            ) from None
        raise DataError(f"{TORCHVISION_SETS[name]} under {root}: {str(e).splitlines()[0]}") from e
    raise ValueError(f"unknown torchvision dataset {name!r}")
