"""What every analysis accepts: any feature-map module, images as one tensor or as batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cossl_analysis.errors import AnalysisError

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


def takes_pixels(model: nn.Module) -> bool:
    """Whether ``model`` is (or wraps) an encoder of this package, which normalises [0, 1] pixels
    itself; any other module takes whatever its author meant."""
    for m in (model, getattr(model, "model", None), getattr(model, "encoder", None)):
        if isinstance(getattr(m, "normalize", None), nn.Module):
            return True
    return False


def check_model(model: Any, images: Any = None, what: str = "model") -> None:
    """One-line ``AnalysisError`` at the entry of an analysis: ``model`` must be an ``nn.Module``;
    ``images`` must not be a numpy array and, for an encoder of this package, must be [0, 1] or
    uint8 pixels (B, 3, H, W) (:func:`check_images`) of a side it runs at (a ViT built for one size).
    A function or a lambda is refused here rather than later: the analyses switch the model to eval
    mode, read its device and hash or copy its weights, and a lambda cannot be pickled."""
    if not isinstance(model, nn.Module):
        kind = ("a lambda" if getattr(model, "__name__", "") == "<lambda>" else "a function") if callable(model) \
            else f"a {type(model).__name__}"
        raise AnalysisError(f"{what} must be an nn.Module (e.g. cossl_analysis.from_module(network)), got {kind}: "
                            "the analyses need its eval mode, device and weights, and a lambda cannot be pickled")
    if isinstance(images, np.ndarray):
        check_images(images)
    if not isinstance(images, Tensor) or not takes_pixels(model):
        return
    check_images(images)
    side = int(images.shape[-1])
    probe = getattr(model, "map_size", None)  # an external model: probing says which sizes it takes
    if callable(probe) and side != getattr(model, "resolution", side):
        probe(side)
        return
    backbone = getattr(model, "backbone", None)  # a cossl encoder on any network
    if hasattr(backbone, "probe") and side != getattr(backbone, "input_size", side):
        from cossl_train.errors import BackboneError

        try:
            backbone.probe(side)
        except BackboneError as err:
            raise AnalysisError(str(err)) from None


def check_images(images: Any, what: str = "images") -> None:
    """One-line ``AnalysisError`` unless ``images`` is a (B, 3, H, W) tensor of uint8 pixels or of
    float pixels in [0, 1] (the encoders normalise inside): not a numpy array, not channels-last,
    not 0-255 floats, not normalised images."""
    if isinstance(images, np.ndarray):
        layout = " (channels-last)" if images.ndim == 4 and images.shape[-1] == 3 else ""
        raise AnalysisError(f"{what} is a numpy array of shape {images.shape}{layout}; give a torch tensor "
                            "(B, 3, H, W), e.g. torch.from_numpy(array).permute(0, 3, 1, 2) for (B, H, W, 3)")
    if not isinstance(images, Tensor):
        raise AnalysisError(f"{what} must be a torch tensor (B, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        hint = (": it looks channels-last (B, H, W, 3); use .permute(0, 3, 1, 2)"
                if images.dim() == 4 and images.shape[-1] == 3 else "")
        raise AnalysisError(f"{what} must be (B, 3, H, W), got {tuple(images.shape)}{hint}")
    if images.dtype == torch.uint8 or images.numel() == 0:
        return
    if not images.is_floating_point():
        raise AnalysisError(f"{what} are {images.dtype}; give uint8 pixels (0-255) or float pixels in [0, 1]")
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if low < -1e-3:
        raise AnalysisError(f"{what} are floats down to {low:.4g}: normalised images? give float pixels in [0, 1] "
                            "(the encoders normalise inside) or uint8 pixels")
    if high > 1.0 + 1e-3:
        raise AnalysisError(f"{what} are floats up to {high:.4g}; give float pixels in [0, 1] (divide 0-255 values "
                            "by 255) or uint8 pixels")


def iter_batches(images: Data, labels: Tensor | None = None,
                 batch_size: int = 64) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(images, labels or None) batches: a tensor is cut into ``batch_size`` slices (``labels``
    alongside); an iterable passes through, each item images or (images, labels, ...)."""
    if isinstance(images, np.ndarray):
        check_images(images)
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
        x, y = (item, None) if isinstance(item, Tensor) else (
            (item[0], item[1] if len(item) > 1 else None) if isinstance(item, (tuple, list)) else (item, None))
        if isinstance(x, np.ndarray):
            check_images(x, "a batch of images")
        if not isinstance(x, Tensor):
            raise TypeError(f"cannot read a batch from {type(item).__name__}")
        yield x, y


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
