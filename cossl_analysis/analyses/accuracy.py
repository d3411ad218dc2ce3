"""The one top-1 loop of the analyses that score a probe (clean, corrupted, attacked, internally
corrupted images, dropped local representations)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cossl_analysis.analyses._common import Data, check_fmap, check_model, iter_batches, model_device, model_dtype
from cossl_train.encoder import pool_features
from cossl_train.evaluate import eval_mode, pixels

__all__ = ["ProbeClassifier", "classifier_accuracy", "probe_accuracy", "top1"]


class ProbeClassifier(nn.Module):
    """encoder + pooling (``pool_features``: its head included) + probe: [0, 1] images -> logits,
    the classifier every accuracy of the package scores."""

    def __init__(self, model: nn.Module, probe: nn.Module) -> None:
        super().__init__()
        self.model, self.probe = model, probe

    def forward(self, x: Tensor) -> Tensor:
        return self.probe(pool_features(self.model, check_fmap(self.model(x))))


def top1(logits_of: Callable[[Tensor, Tensor], Tensor], inputs: Data, labels: Tensor | None = None,
         batch_size: int = 256) -> float:
    """Fraction of inputs whose ``logits_of(batch, batch_labels).argmax(1)`` is the label; the
    labels are passed so that an attack can use them. ``inputs``: see ``_common.iter_batches``."""
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
    check_model(classifier, images, "classifier")
    device, dtype = model_device(classifier), model_dtype(classifier)
    with eval_mode(classifier), torch.no_grad():
        return top1(lambda x, _: classifier(pixels(x, device, dtype)), images, labels, batch_size)


def probe_accuracy(model: nn.Module, probe: nn.Module, images: Data, labels: Tensor | None = None,
                   batch_size: int = 64) -> float:
    """Top-1 of probe(pool_features(model, model(x))) in eval mode (an ``Encoder`` pools with its head)."""
    check_model(model, images)
    check_model(probe, what="probe")
    device, dtype = model_device(model), model_dtype(model)

    def logits(x: Tensor, _: Tensor) -> Tensor:
        return probe(pool_features(model, check_fmap(model(pixels(x, device, dtype)))))

    with eval_mode(model, probe), torch.no_grad():
        return top1(logits, images, labels, batch_size)
