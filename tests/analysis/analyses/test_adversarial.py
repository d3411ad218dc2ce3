"""Tests for cossl_analysis.analyses.adversarial (FGSM / PGD accuracy through torchattacks)."""

from __future__ import annotations

import pytest
import torch
from sklearn import datasets
from torch import nn

from cossl_analysis.analyses.adversarial import adversarial_examples, attack_accuracy


class Normalize(nn.Module):
    """Per-channel standardisation inside the model: the attacked inputs stay in pixel space."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP trained in a second or two on sklearn's 8x8 digits, upscaled to 3x16x16 in [0, 1].

    Returns the model (in train mode, with dropout, to check that attacks and clean scoring both use
    eval mode) and 300 held-out images with their labels.
    """
    data = datasets.load_digits()
    images = torch.tensor(data.images, dtype=torch.float32) / 16.0  # pixel values 0..16 -> [0, 1]
    images = images.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # 16x16
    images = images.unsqueeze(1).repeat(1, 3, 1, 1)
    labels = torch.tensor(data.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(images.shape[0], generator=generator)
    train, test = order[:-300], order[-300:]

    torch.manual_seed(0)
    mean, std = images[train].mean(dim=(0, 2, 3)), images[train].std(dim=(0, 2, 3))
    model = nn.Sequential(
        Normalize(mean, std), nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):  # full batch, ~1500 images
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images[train]), labels[train]).backward()
        optimizer.step()
    return model, images[test], labels[test]


def clean_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(dim=1) == labels).sum().item() / labels.shape[0]
    model.train(was_training)
    return accuracy


def test_model_learned_the_task(digits) -> None:
    model, images, labels = digits
    assert clean_accuracy(model, images, labels) > 0.9


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_zero_budget_is_clean_accuracy_exactly(digits, attack: str) -> None:
    model, images, labels = digits
    expected = (model.eval()(images).argmax(dim=1) == labels).sum().item() / labels.shape[0]
    model.train()
    assert attack_accuracy(model, images, labels, attack, eps=0.0, batch_size=64) == expected
    assert model.training  # the caller's mode is restored
    assert torch.equal(adversarial_examples(model, images, labels, attack, eps=0.0), images)


def test_large_budget_breaks_the_model(digits) -> None:
    model, images, labels = digits
    clean = clean_accuracy(model, images, labels)
    # Digits sit on a 1/16 grid and most pixels are 0 (perturbable upwards only), so it takes a few
    # grey levels: clean ~0.97, PGD ~0.35 at 32/255 and ~0 at 64/255.
    assert attack_accuracy(model, images, labels, "pgd", eps=32 / 255) < 0.5 * clean
    assert attack_accuracy(model, images, labels, "pgd", eps=64 / 255) < 0.1
    assert attack_accuracy(model, images, labels, "fgsm", eps=64 / 255) < 0.3


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_perturbation_within_budget_and_pixel_range(digits, attack: str, eps: float) -> None:
    model, images, labels = digits
    # alpha = eps makes PGD steps overshoot the box, so the projection is exercised.
    adversarial = adversarial_examples(model, images, labels, attack, eps=eps, alpha=eps, batch_size=128)
    assert adversarial.shape == images.shape and adversarial.dtype == images.dtype
    assert (adversarial - images).abs().max().item() <= eps + 1e-6
    assert adversarial.min().item() >= 0.0 and adversarial.max().item() <= 1.0
    assert (adversarial - images).abs().max().item() > 0.9 * eps  # the budget is actually used


def test_fgsm_matches_hand_written_fgsm(digits) -> None:
    model, images, labels = digits
    eps = 4 / 255
    model.eval()  # FGSM's gradient is taken in eval mode
    x = images.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), labels)  # mean over the batch, as torchattacks
    (grad,) = torch.autograd.grad(loss, x)
    expected = (images + eps * grad.sign()).clamp(0.0, 1.0)
    model.train()
    adversarial = adversarial_examples(model, images, labels, "fgsm", eps=eps, batch_size=images.shape[0])
    assert torch.equal(adversarial, expected)
    assert attack_accuracy(model, images, labels, "fgsm", eps=eps) == clean_accuracy(model, expected, labels)


def test_pgd_is_seeded_and_leaves_global_rng_alone(digits) -> None:
    model, images, labels = digits
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = adversarial_examples(model, images, labels, "pgd", eps=8 / 255, steps=3, seed=1)
    assert torch.equal(torch.rand(3), expected_draw)
    assert torch.equal(first, adversarial_examples(model, images, labels, "pgd", eps=8 / 255, steps=3, seed=1))
    assert not torch.equal(first, adversarial_examples(model, images, labels, "pgd", eps=8 / 255, steps=3, seed=2))


def test_accuracy_falls_with_the_budget_and_pgd_beats_fgsm(digits) -> None:
    model, images, labels = digits
    clean = clean_accuracy(model, images, labels)
    budgets = [0.0, 2 / 255, 8 / 255, 32 / 255]
    curves = {attack: [attack_accuracy(model, images, labels, attack, eps=e, steps=5) for e in budgets]
              for attack in ("fgsm", "pgd")}
    for accuracies in curves.values():
        assert accuracies[0] == clean
        assert all(later <= earlier + 0.02 for earlier, later in zip(accuracies, accuracies[1:], strict=False))
    # PGD is at least as strong as FGSM (up to noise from the random start).
    for fgsm, pgd in zip(curves["fgsm"], curves["pgd"], strict=True):
        assert pgd <= fgsm + 0.02


def test_errors(digits) -> None:
    model, images, labels = digits
    with pytest.raises(ValueError, match="unknown attack 'cw'; valid attacks: fgsm, pgd"):
        attack_accuracy(model, images, labels, "cw")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        attack_accuracy(model, images, labels, "pgd", eps=-1 / 255)
    with pytest.raises(ValueError, match=r"pixel space \[0, 1\]"):
        attack_accuracy(model, images * 2 - 1, labels, "pgd")
    with pytest.raises(ValueError, match="labels must have shape"):
        attack_accuracy(model, images, labels[:-1], "pgd")
