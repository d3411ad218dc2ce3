"""Checkpoints and evaluation images for the analyses.

* ``load_checkpoint(path, device)``: a cossl checkpoint as a ready model (``Pretrained``: the
  ``encoder`` mapping [0, 1] images to the feature map, ``features``/``local`` for pooled and local
  representations, the linear ``probe`` if the run had one, the ``config``). It is
  ``cossl_train.checkpoint.load_pretrained``; a run folder holding ``checkpoint.pt`` is accepted too.
  Anything that is not a cossl checkpoint raises ``CheckpointError`` with a one-line message.
* ``eval_data(cfg, num_images, seed)``: a fixed, seeded subset of the validation images of a
  checkpoint's data config as a float tensor in [0, 1], with labels when the data has them.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cossl_train.checkpoint import CheckpointError, Pretrained, load_pretrained
from cossl_train.config import Config, to_dict

__all__ = ["CheckpointError", "EvalData", "Pretrained", "eval_data", "load_checkpoint"]

log = logging.getLogger(__name__)

#: file name the trainer gives the checkpoint inside its ``train.out_dir``
CHECKPOINT_NAME = "checkpoint.pt"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """A ready model (encoder in eval mode, probe if any, config) from a cossl checkpoint.

    Args:
        path: the checkpoint file, or a run folder containing ``checkpoint.pt``.
        device: where the encoder and the probe are put.

    Raises:
        CheckpointError: missing file, unreadable file, file that is not a cossl checkpoint, or one
            holding another architecture than its config describes (message is one line).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise CheckpointError(f"{path} is a folder without a {CHECKPOINT_NAME}")
        path = path / CHECKPOINT_NAME
    return load_pretrained(path, device)


@dataclass
class EvalData:
    """Evaluation images of one data config.

    Attributes:
        images: (N, 3, R, R) float32 in [0, 1] (the encoders normalise internally).
        labels: (N,) int64, or None when the images are unlabelled (any label -1).
        indices: (N,) positions of the images within ``split``'s dataset (for reproducing them).
        split: where they come from: ``"val"`` (the config's validation split) or ``"held-out"``
            (no validation split: the part of the training set that ``eval_splits`` holds out).
        available: number of images in that split.
        skipped: images drawn but unreadable (dropped, like the loaders do).
    """

    images: Tensor
    labels: Tensor | None
    indices: Tensor
    split: str
    available: int
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.images)


def _eval_split(cfg: Config) -> tuple[Dataset, str]:
    """The validation dataset of ``cfg`` (uint8 (3, R, R), label) and the split's name."""
    from cossl_train.data import build_eval_datasets
    from cossl_train.evaluate import eval_splits

    _, val = build_eval_datasets(cfg.data, cfg.augment)
    if val is not None:
        return val, "val"
    # Same fallback as the offline probe (cossl-train linear-probe), with the same seed, so that
    # analyses and probe accuracy are measured on images the probe was not trained on.
    _, held_out = eval_splits(cfg.data, cfg.augment, seed=cfg.train.seed)
    return held_out, "held-out"


@functools.lru_cache(maxsize=8)
def _eval_data_cached(key: str, num_images: int, seed: int) -> EvalData:
    from cossl_train.config import from_dict

    cfg = from_dict(json.loads(key))
    dataset, split = _eval_split(cfg)
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError(f"the {split} split of data.dataset={cfg.data.dataset} is empty")
    # A seeded random subset rather than the first N: folder datasets are sorted by class, so the
    # first N images would often be a single class. Sorted so that reading stays sequential.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    images: list[Tensor] = []
    labels: list[int] = []
    kept: list[int] = []
    skipped = 0
    for i in order:
        if len(kept) == num_images:
            break
        sample = dataset[i]
        if sample is None:  # unreadable file: dropped, as collate_skip_none does in training
            skipped += 1
            continue
        images.append(sample[0])
        labels.append(int(sample[1]))
        kept.append(i)
    if not kept:
        raise ValueError(f"none of the {split} images of data.dataset={cfg.data.dataset} could be read")
    perm = torch.tensor(kept).argsort()
    x = torch.stack(images)[perm]
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    y = torch.tensor(labels, dtype=torch.int64)[perm]
    return EvalData(
        images=x,
        labels=None if (y < 0).any() else y,
        indices=torch.tensor(kept)[perm],
        split=split,
        available=n,
        skipped=skipped,
    )


def eval_data(cfg: Config, num_images: int, seed: int = 0) -> EvalData:
    """``num_images`` validation images of ``cfg``'s data (fewer when the split is smaller).

    The validation split of ``cfg.data`` is used (digits: the fixed 20% split; folders:
    ``data.val_root``; torchvision sets: the test set); without one, the held-out part of the
    training images that ``cossl_train.evaluate.eval_splits`` uses. The images are a uniformly
    random subset drawn with ``seed``, in dataset order, resized by the evaluation transform at
    ``augment.resolution``. Results are cached per (data, augment config, N, seed), so checkpoints
    sharing a data config are analysed on the very same images.
    """
    if num_images < 1:
        raise ValueError(f"the number of images must be >= 1, got {num_images}")
    d = to_dict(cfg)
    # Only the sections that decide the images (plus the seed of the held-out split) form the key.
    key = json.dumps({"data": d["data"], "augment": d["augment"], "train": {"seed": d["train"]["seed"]}},
                     sort_keys=True, default=list)
    return _eval_data_cached(key, int(num_images), int(seed))
