"""Shared fixtures: tiny backbones and data so the suite stays fast on 2 cores."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

# One thread per process: the tests run tiny models, where thread start-up and spinning cost more
# than they save, and a fixed count keeps float reductions identical across the processes that
# the resume and distributed tests compare.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


class TinyConvNet(nn.Module):
    """(B, 3, H, W) -> (B, C, H/4, W/4): a backbone small enough for exact-equality tests."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.num_features = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def tiny_backbone() -> TinyConvNet:
    torch.manual_seed(0)
    return TinyConvNet()


#: a tiny but real pre-training config on the embedded digits (16 px, 2x2 feature maps)
TINY_OVERRIDES = [
    "data.dataset=digits", "data.digits_size=16", "data.num_workers=0",
    "augment.resolution=16", "backbone.name=resnet18", "backbone.small_image=true", "backbone.width=8",
    "head.proj_hidden=64", "head.proj_dim=32", "head.pred_hidden=64", "co.proj_hidden=32", "co.pred_hidden=32",
    "optim.name=adamw", "optim.lr=2e-3", "optim.lr_scaling=none", "optim.warmup_epochs=0",
    "train.batch_size=64", "train.log_every=5", "train.tensorboard=false", "train.precision=fp32",
]


#: TINY_OVERRIDES with heads small enough to check every method against loops
METHOD_OVERRIDES = [*TINY_OVERRIDES, "head.proj_hidden=24", "head.proj_dim=16", "head.pred_hidden=24",
                    "co.proj_hidden=20", "co.pred_hidden=20", "method.dino.out_dim=12"]


def perturb_targets(model: torch.nn.Module) -> None:
    """Make momentum copies differ from their online networks, so using the wrong one shows."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if not p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.fixture(autouse=True)
def _fresh_package_logging() -> Iterator[None]:
    """Runs set up the package logger (stderr and train.log handlers); every test starts and ends
    with the logger as a fresh process has it, so no test sees another's (or a fixture's) set-up."""

    def reset() -> None:
        logger = logging.getLogger("cossl_train")
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True

    reset()
    yield
    reset()


def leaves(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"section.key": value}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(leaves(v, key + "."))
        else:
            out[key] = v
    return out


def flat_config(cfg: Any) -> dict[str, Any]:
    """A Config as {"section.key": value}, e.g. to name the keys in which two configs differ."""
    from cossl_train.config import to_dict

    return leaves(to_dict(cfg))


def json_numbers(obj: Any) -> list[float]:
    """Every number in a JSON value, NaN and infinities included (for the tests to catch them)."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in json_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in json_numbers(v)]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def random_image_folder(root: os.PathLike[str], classes: tuple[str, ...] = ("a", "b"), per_class: int = 8,
                        size: int = 20, seed: int = 0) -> None:
    """``root/<class>/<i>.png``: ``per_class`` random RGB images of ``size`` px per class."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in classes:
        (Path(root) / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(Path(root) / cls / f"{i}.png")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Checkpoints of BYOL and CO-BYOL briefly pre-trained on the digits (with online probes):
    {"byol": Path, "co_byol": Path}. Trained once per test session."""
    from cossl_train.config import load_config
    from cossl_train.trainer import pretrain

    root = tmp_path_factory.mktemp("tiny_checkpoints")
    out = {}
    for method in ("byol", "co_byol"):
        cfg = load_config(None, [*TINY_OVERRIDES, f"method.name={method}", "train.epochs=3",
                                 f"train.out_dir={root / method}"])
        pretrain(cfg, progress=False)
        out[method] = root / method / "checkpoint.pt"
    return out


def result_row(method: str, backbone: str, rf: int, c_min: float, top1: float, **kw) -> dict:
    row = {"method": method, "backbone": backbone, "rf": rf, "c_min": c_min, "epochs": 1, "linear_top1": top1,
           "linear_top5": top1 + 10, "knn_top1": top1 - 5, "checkpoint": f"/runs/{method}_{backbone}_{c_min}/c.pt"}
    row.update(kw)
    return row


#: a small grid results table: CO-BYOL on three RFs x two c_min, BYOL ResNet-50 references at both c_min
RESULT_ROWS = [
    *(result_row("co_byol", b, rf, c, 50 + rf / 10 + 10 * c)
      for b, rf in (("rf_resnet50_rf43", 43), ("rf_resnet50_rf155", 155), ("resnet50", 427)) for c in (0.2, 0.7)),
    result_row("byol", "resnet50", 427, 0.2, 60.0),
    result_row("byol", "resnet50", 427, 0.7, 65.0),
]


@pytest.fixture
def results_table(tmp_path: Path) -> Path:
    """RESULT_ROWS written by the grid's own writer, so the tests follow the grid's CSV contract."""
    from cossl_train.experiments.results import write_csv

    path = tmp_path / "results.csv"
    write_csv(RESULT_ROWS, path)
    return path
