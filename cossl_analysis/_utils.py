"""Small helpers shared by the analyses: batching, device lookup, eval mode, raw-number dumps."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

# What the analyses accept as data: one tensor of images (B, 3, H, W), batched here, or any
# iterable of batches (e.g. a DataLoader) yielding image tensors or (images, labels, ...) tuples.
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


@contextlib.contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Put modules in eval mode for the duration, then restore each submodule's own flag.

    Eval mode matters beyond reproducibility: a BatchNorm in train mode mixes the samples of a batch,
    which would make one image's gradient depend on the other copies stacked with it.
    """
    saved: list[tuple[nn.Module, bool]] = []
    for m in modules:
        if m is None:
            continue
        saved.extend((sub, sub.training) for sub in m.modules())
        m.eval()
    try:
        yield
    finally:
        for sub, flag in saved:
            sub.training = flag


def iter_batches(
    images: Data, labels: Tensor | None = None, batch_size: int = 64
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield (images (b, 3, H, W), labels (b,) or None) batches.

    A tensor is cut into ``batch_size`` slices (with ``labels`` sliced alongside); an iterable is
    passed through, its items being a tensor of images or a tuple/list whose first two entries are
    images and labels (``labels`` must then be None: they come with the batches).
    """
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


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays (recursively) to plain Python for json.dump."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(obj: Any, path: str | Path) -> Path:
    """Dump ``obj`` as indented JSON to ``path`` (parents created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(obj), indent=2))
    return path


def sibling(path: str | Path, suffix: str) -> Path:
    """``fig.png`` -> ``fig.json`` (or another suffix): where the raw numbers of a plot go."""
    return Path(path).with_suffix(suffix)
