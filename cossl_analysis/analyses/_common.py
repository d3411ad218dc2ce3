"""What every analysis accepts: any feature-map module, images as one tensor or as batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

# One tensor of images (B, 3, H, W), batched here, or any iterable of batches (a DataLoader, say)
# yielding image tensors or (images, labels, ...) tuples.
Data = Tensor | Iterable[Any]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a parameter-free module."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first floating parameter (inputs are cast to it); else float32."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def iter_batches(images: Data, labels: Tensor | None = None,
                 batch_size: int = 64) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(images, labels or None) batches: a tensor is cut into ``batch_size`` slices (``labels``
    alongside); an iterable passes through, each item images or (images, labels, ...)."""
    if isinstance(images, Tensor):
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        for start in range(0, len(images), batch_size):
            y = None if labels is None else labels[start : start + batch_size]
            yield images[start : start + batch_size], y
        return
    if labels is not None:
        raise ValueError("labels must come with the batches when images is an iterable")
    for item in images:
        if isinstance(item, Tensor):
            yield item, None
        elif isinstance(item, (tuple, list)):
            yield item[0], (item[1] if len(item) > 1 else None)
        else:
            raise TypeError(f"cannot read a batch from {type(item).__name__}")


def num_batches(images: Data, batch_size: int) -> int | None:
    """How many batches ``iter_batches`` will yield, when known cheaply (tqdm totals), else None."""
    if isinstance(images, Tensor):
        return -(-len(images) // batch_size)
    try:
        return len(images)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_fmap(fmap: Any) -> Tensor:
    """Raise unless the model returned a (B, C, h, w) feature map."""
    if not isinstance(fmap, Tensor) or fmap.dim() != 4:
        shape = tuple(fmap.shape) if isinstance(fmap, Tensor) else type(fmap).__name__
        raise ValueError(f"the model must return a (B, C, h, w) feature map, got {shape}")
    return fmap
