"""Image files as the models see their validation images (cossl_analysis.report.loading)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cossl_analysis.report import load_images


def test_load_images(tmp_path: Path) -> None:
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 60), 128, dtype=np.uint8)).save(grey)
    x = load_images(["skimage:astronaut", grey], 24)
    assert x.shape == (2, 3, 24, 24) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.allclose(x[1], torch.full_like(x[1], 128 / 255))  # grey -> three equal channels
    with pytest.raises(ValueError, match="no sample image 'nonesuch'"):
        load_images(["skimage:nonesuch"], 24)
    with pytest.raises(FileNotFoundError):
        load_images([tmp_path / "missing.png"], 24)
    with pytest.raises(ValueError):
        load_images([], 24)
