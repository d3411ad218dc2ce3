"""Adversarial accuracy under small L-inf budgets: FGSM and PGD (random start) of ``torchattacks``.

The model maps [0, 1] pixels to logits (normalisation inside), so budgets and steps are in pixel
units (``2/255``); it runs in eval mode. Budget 0 runs no attack: the clean images are scored, so
its accuracy is the clean accuracy exactly (docs/analysis.md says why).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from cossl_analysis.analyses._common import model_device
from cossl_analysis.analyses.accuracy import top1
from cossl_analysis.analyses.defaults import ATTACKS
from cossl_train.evaluate import eval_mode

__all__ = ["ATTACKS", "AdversarialResult", "adversarial_examples", "adversarial_sweep", "attack_accuracy",
           "default_alpha"]


def default_alpha(eps: float, steps: int) -> float:
    """PGD step size used when none is given: ``2.5 * eps / steps`` (Madry et al., 2018).

    With this choice ``steps`` steps can cross the whole ``[-eps, eps]`` box from the random start
    and back, whatever the budget; torchattacks' fixed default (2/255) would be too large for
    ``eps = 1/255`` and too small for ``eps = 32/255`` at 10 steps.
    """
    return 2.5 * eps / steps


def _check_args(attack: str, eps: float, steps: int, alpha: float | None, batch_size: int) -> None:
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; valid attacks: {', '.join(ATTACKS)}")
    if not eps >= 0:  # also rejects NaN
        raise ValueError(f"eps must be >= 0 (an L-inf budget in pixel units, e.g. 2/255), got {eps}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _check_data(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not torch.is_floating_point(images) or images.ndim != 4:
        raise ValueError(
            f"images must be a float tensor (N, C, H, W) in [0, 1], got {images.dtype} {tuple(images.shape)}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        # torchattacks clamps adversarial images to [0, 1]; inputs outside that range (e.g. already
        # normalised) would be moved by more than eps and the budget would be meaningless.
        raise ValueError(
            f"images must be in pixel space [0, 1] (normalise inside the model), got range "
            f"[{images.min().item():.3g}, {images.max().item():.3g}]"
        )


@contextlib.contextmanager
def _seeded_torch(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG (PGD's random start) for the block; the caller's RNG state is restored."""
    if seed is None:
        yield
        return
    if device.type == "cpu":
        devices: list[int] = []  # the CPU generator is always forked
        device_type = "cuda"  # unused without devices
    else:
        index = device.index if device.index is not None else getattr(torch, device.type).current_device()
        devices, device_type = [index], device.type
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        torch.manual_seed(seed)
        yield


def _build_attack(
    model: nn.Module, attack: str, eps: float, steps: int, alpha: float | None, device: torch.device
) -> Any:
    """A torchattacks attack object (typed Any: torchattacks ships no type information)."""
    import torchattacks

    if attack == "fgsm":
        attacker = torchattacks.FGSM(model, eps=eps)
    else:
        step = default_alpha(eps, steps) if alpha is None else alpha
        attacker = torchattacks.PGD(model, eps=eps, alpha=step, steps=steps, random_start=True)
    attacker.set_device(device)  # torchattacks guesses from the parameters; be explicit
    return attacker


@contextlib.contextmanager
def _attacking(model: nn.Module, attack: str, eps: float, steps: int, alpha: float | None, batch_size: int,
               device: torch.device | str | None, seed: int | None) -> Iterator[tuple[Any | None, torch.device]]:
    """(torchattacks attacker or None for eps = 0, device) with the model in eval mode and the RNG seeded."""
    _check_args(attack, eps, steps, alpha, batch_size)
    if device is None:
        device = model_device(model)
    else:  # asked for a device: the model goes there
        device = torch.device(device)
        model.to(device)
    attacker = None if eps == 0 else _build_attack(model, attack, eps, steps, alpha, device)
    with eval_mode(model), _seeded_torch(seed, device):
        yield attacker, device


def adversarial_examples(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: str = "pgd",
    eps: float = 2 / 255,
    steps: int = 10,
    alpha: float | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int | None = 0,
) -> torch.Tensor:
    """Adversarial versions of ``images`` (same shape, on CPU, in [0, 1], within ``eps`` in L-inf).

    Args:
        model: maps (N, 3, H, W) float images in [0, 1] to logits; normalisation inside.
        images: float tensor (N, 3, H, W) in [0, 1]; may live on CPU, moved per batch.
        labels: integer class labels (N,).
        attack: ``'fgsm'`` or ``'pgd'`` (L-inf, random start).
        eps: L-inf budget in pixel units (e.g. ``2/255``); 0 returns the clean images (copied).
        steps: PGD iterations (ignored by FGSM).
        alpha: PGD step size in pixel units; default ``2.5 * eps / steps``.
        batch_size: images attacked at once.
        device: where to run; default the model's device. If given, the model is moved there.
        seed: seeds PGD's random start (torch's RNG state is restored afterwards); None: unseeded.
    """
    _check_data(images, labels)
    parts = []
    with _attacking(model, attack, eps, steps, alpha, batch_size, device, seed) as (attacker, dev):
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(dev)
            y = labels[start : start + batch_size].to(dev).long()
            parts.append((x if attacker is None else attacker(x, y)).detach().cpu().clone())
    return torch.cat(parts) if parts else images.detach().clone().cpu()


def attack_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str = "pgd",
                    eps: float = 2 / 255, steps: int = 10, alpha: float | None = None, batch_size: int = 256,
                    device: torch.device | str | None = None, seed: int | None = 0) -> float:
    """Top-1 accuracy of ``model`` on adversarially perturbed ``images`` (arguments as in
    :func:`adversarial_examples`; ``eps = 0`` gives the clean accuracy exactly). Returns a value in [0, 1]."""
    _check_data(images, labels)
    with _attacking(model, attack, eps, steps, alpha, batch_size, device, seed) as (attacker, dev):

        def logits(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x, y = x.to(dev), y.to(dev).long()
            x = x if attacker is None else attacker(x, y)
            with torch.no_grad():
                return model(x)

        return top1(logits, images, labels, batch_size)


@dataclass
class AdversarialResult:
    """Top-1 of one model (encoder + pooling + probe) under each attack at each L-inf budget
    (``eps_255``, in /255 of pixel values; 0 is the clean accuracy), and per attack its mean over
    the budgets above 0 (``average``)."""

    eps_255: list[float]
    accuracy: dict[str, list[float]]
    average: dict[str, float | None]
    clean: float
    steps: int
    seed: int | None
    num_images: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AdversarialResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def adversarial_sweep(model: nn.Module, probe: nn.Module | None, images: torch.Tensor, labels: torch.Tensor,
                      attacks: Sequence[str] = ATTACKS, eps_255: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
                      steps: int = 10, batch_size: int = 256, seed: int | None = 0) -> AdversarialResult:
    """FGSM / PGD accuracy of ``probe(pool(model(x)))`` (or of ``model`` itself, a classifier, when
    ``probe`` is None) at every budget; images uint8 or float in [0, 1] (N, 3, H, W), as
    ``cossl-analysis adversarial`` computes them."""
    from cossl_analysis.analyses._common import check_model
    from cossl_analysis.analyses.accuracy import ProbeClassifier, classifier_accuracy
    from cossl_train.evaluate import pixels

    check_model(model, images)
    classifier = model if probe is None else ProbeClassifier(model, probe)
    x = pixels(images)
    clean = classifier_accuracy(classifier, x, labels, batch_size)
    acc = {a: [clean if e == 0 else attack_accuracy(classifier, x, labels, attack=a, eps=e / 255, steps=steps,
                                                    batch_size=batch_size, seed=seed) for e in eps_255]
           for a in attacks}
    attacked = [k for k, e in enumerate(eps_255) if e > 0]
    average = {a: sum(acc[a][k] for k in attacked) / len(attacked) if attacked else None for a in attacks}
    return AdversarialResult([float(e) for e in eps_255], acc, average, clean, steps, seed, len(labels))
