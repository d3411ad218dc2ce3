"""The one top-1 loop of the analyses that score a probe (clean, corrupted, attacked, internally
corrupted images, dropped local representations)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cossl_analysis._utils import Data, eval_mode, iter_batches, model_device, model_dtype

__all__ = ["classifier_accuracy", "pixels", "top1"]


def pixels(x: Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """A batch as float pixels in [0, 1] on ``device``: uint8 images are divided by 255."""
    x = x.to(device, non_blocking=True)
    return x.to(dtype) / 255 if x.dtype == torch.uint8 else x.to(dtype)


def top1(
    logits_of: Callable[[Tensor, Tensor], Tensor],
    inputs: Data,
    labels: Tensor | None = None,
    batch_size: int = 256,
) -> float:
    """Fraction of inputs whose ``logits_of(batch, batch_labels).argmax(1)`` is the label.

    Args:
        logits_of: maps a batch (as cut from ``inputs``) and its labels to logits (B, classes); it
            receives the labels so that an attack can use them.
        inputs: a tensor cut into ``batch_size`` slices with ``labels``, or an iterable of
            (inputs, labels) batches (see ``_utils.iter_batches``).
        labels: (N,) int labels when ``inputs`` is a tensor.
    """
    correct = seen = 0
    for x, y in iter_batches(inputs, labels, batch_size):
        if y is None:
            raise ValueError("top-1 accuracy needs labels")
        pred = logits_of(x, y).argmax(dim=1)
        correct += int((pred == y.to(pred.device)).sum())
        seen += len(y)
    if seen == 0:
        raise ValueError("cannot compute an accuracy on zero images")
    return correct / seen


def classifier_accuracy(classifier: nn.Module, images: Data, labels: Tensor | None = None,
                        batch_size: int = 256) -> float:
    """Top-1 of ``classifier`` ([0, 1] images -> logits) in eval mode on uint8 or float images."""
    device, dtype = model_device(classifier), model_dtype(classifier)
    with eval_mode(classifier), torch.no_grad():
        return top1(lambda x, _: classifier(pixels(x, device, dtype)), images, labels, batch_size)
