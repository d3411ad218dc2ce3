"""Labelled uint8 images held in memory: the base of the embedded datasets."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset


class InMemoryImages(Dataset):
    """Samples ``(images[i] uint8 (3, H, W), int(labels[i]))``; subclasses set ``images``,
    ``labels`` (int64 (N,)), ``split`` and ``classes``."""

    images: Tensor
    labels: Tensor
    split: str
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])
