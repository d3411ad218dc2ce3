"""The Python API refuses, at its entry and in one line, inputs it would otherwise get wrong: 0-255
float images, channels-last or numpy images, normalised images, a lambda for a model, and a ViT
given an image size it was not built for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import timm
import torch
from torch import nn

from cossl_analysis import (
    adversarial_sweep,
    corruption_sweep,
    erf_map,
    from_module,
    internal_corruption_sweep,
    patch_drop_analysis,
    representations,
    similarity_analysis,
)
from cossl_analysis.errors import AnalysisError
from cossl_train.encoder import Encoder


@pytest.fixture(scope="module")
def cnn() -> Encoder:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU())
    backbone.num_features = 4  # type: ignore[assignment]
    return Encoder(backbone, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    torch.manual_seed(0)
    return from_module(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32,
                                         patch_size=8, depth=1, global_pool="avg"))


PROBE = nn.Linear(4, 3)
LABELS = torch.tensor([0, 1, 2, 0])

# name -> the call of one public analysis on (model, images)
CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "representations": lambda m, x: representations(m, x),
    "similarity_analysis": lambda m, x: similarity_analysis(m, x),
    "patch_drop_analysis": lambda m, x: patch_drop_analysis(m, x, fractions=[0.0]),
    "erf_map": lambda m, x: erf_map(m, x),
    "internal_corruption_sweep": lambda m, x: internal_corruption_sweep(m, PROBE, x, LABELS, strengths=[0.0]),
    "corruption_sweep": lambda m, x: corruption_sweep(m, PROBE, x, LABELS, corruptions=["contrast"],
                                                      severities=[1], workers=1),
    "adversarial_sweep": lambda m, x: adversarial_sweep(m, PROBE, x, LABELS, eps_255=[0]),
}

PIXELS = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))

BAD_IMAGES: dict[str, tuple[Any, str]] = {
    "0-255 floats": (PIXELS * 255, "floats up to 2"),
    "normalised images": ((PIXELS - 0.5) / 0.25, "normalised images?"),
    "a channels-last tensor": (PIXELS.permute(0, 2, 3, 1).contiguous(), "looks channels-last"),
    "a channels-last numpy array": (PIXELS.permute(0, 2, 3, 1).numpy(), "numpy array of shape (4, 16, 16, 3)"),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_one_line(call: str, case: str, cnn: Encoder) -> None:
    images, piece = BAD_IMAGES[case]
    with pytest.raises(AnalysisError) as err:
        CALLS[call](cnn, images)
    assert piece in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("call", list(CALLS))
def test_a_lambda_for_a_model_is_one_line(call: str, cnn: Encoder) -> None:
    with pytest.raises(AnalysisError, match="must be an nn.Module .*got a lambda"):
        CALLS[call](lambda x: cnn(x), PIXELS)


@pytest.mark.parametrize("call", ["representations", "similarity_analysis", "erf_map", "internal_corruption_sweep"])
def test_a_vit_at_another_size_is_one_line(call: str, vit: nn.Module) -> None:
    probe = nn.Linear(192, 3)
    images = torch.rand(4, 3, 64, 64)
    run = CALLS[call] if call != "internal_corruption_sweep" else (
        lambda m, x: internal_corruption_sweep(m, probe, x, LABELS, strengths=[0.0]))
    with pytest.raises(AnalysisError, match="cannot run on 64 px images.*built for 32 px"):
        run(vit, images)


def test_good_inputs_still_run(cnn: Encoder) -> None:
    uint8 = (PIXELS * 255).round().to(torch.uint8)
    glob_u8, _ = representations(cnn, uint8)
    glob_f, _ = representations(cnn, uint8.float() / 255)
    assert torch.allclose(glob_u8, glob_f)
    assert np.isfinite(erf_map(cnn, PIXELS)).all()
