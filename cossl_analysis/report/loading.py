"""Checkpoints as :class:`Model` s (a group: the label given, or the method's display name; a unique
label per seed), the evaluation images they are all analysed on (:func:`load_eval_set`), and image
files (:func:`load_images`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis.errors import AnalysisError
from cossl_train.checkpoint import CheckpointError, Pretrained, digest_weights, load_pretrained, probe_path
from cossl_train.config import Config
from cossl_train.evaluate import pixels
from cossl_train.methods import display_name
from cossl_train.trainer import CHECKPOINT_NAME

__all__ = [
    "CheckpointError",
    "EvalSet",
    "Model",
    "Pretrained",
    "load_checkpoint",
    "load_eval_set",
    "load_images",
    "load_models",
    "unique_labels",
    "weights_fingerprint",
]

#: prefix of scikit-image sample photos in :func:`load_images` (``"skimage:astronaut"``)
SKIMAGE_PREFIX = "skimage:"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """A ready model (encoder in eval mode, probe if any, config) from a checkpoint file or run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise CheckpointError(f"{path} is a folder without a {CHECKPOINT_NAME}")
        path = path / CHECKPOINT_NAME
    return load_pretrained(path, device)


def weights_fingerprint(*modules: nn.Module | None) -> str:
    """Content hash (hex) of the modules' state dicts: equal weights, equal fingerprint."""
    digest = hashlib.blake2b(digest_size=16)
    for module in modules:
        digest.update(b"|none|" if module is None else b"|module|")
        if module is not None:
            digest_weights(digest, module)
    return digest.hexdigest()


@dataclass
class Model:
    """One checkpoint ready for the analyses.

    Attributes:
        label: unique display name (``group``, told apart from the other seeds of the group).
        group: the configuration it is a seed of (user label or method display name).
        pretrained: encoder, probe (may be None until ``ensure_probes``), config, epoch, path.
        probe_source: where the probe comes from, in words (for the report).
    """

    label: str
    group: str
    pretrained: Pretrained
    probe_source: str

    @property
    def path(self) -> Path:
        return self.pretrained.path

    @property
    def config(self) -> Config:
        return self.pretrained.config

    @property
    def encoder(self) -> nn.Module:
        return self.pretrained.encoder

    @property
    def probe(self) -> nn.Linear | None:
        return self.pretrained.probe

    @property
    def method(self) -> str:
        return display_name(self.config.method.name)

    @property
    def c_min(self) -> float:
        return float(self.config.augment.c_min)

    @property
    def resolution(self) -> int:
        return int(self.config.augment.resolution)

    @property
    def slug(self) -> str:
        """``label`` made safe as a file or folder name."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label).strip("._") or "model"

    @functools.cached_property
    def classifier(self) -> nn.Module:
        """encoder + pooling (its head included) + probe: [0, 1] images -> logits."""
        return self.pretrained.classifier()

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of the encoder and probe weights: what a cached result of this model depends on."""
        return weights_fingerprint(self.encoder, self.probe)


def unique_labels(groups: Sequence[str], pretrained: Sequence[Pretrained]) -> list[str]:
    """Labels telling apart checkpoints of the same group: by pre-training ``c_min`` where that
    differs within the group, then by ``train.seed``, then by run folder, then by position (``#k``)."""
    labels = list(groups)
    tellers = (
        lambda p: f"c_min={p.config.augment.c_min:g}",
        lambda p: f"seed={p.config.train.seed}",
        lambda p: f"({p.path.parent.name})",
    )
    for teller in tellers:
        told = [teller(p) for p in pretrained]
        values: dict[str, set[str]] = {}
        for lab, t in zip(labels, told, strict=True):
            values.setdefault(lab, set()).add(t)
        labels = [f"{lab} {t}" if labels.count(lab) > 1 and len(values[lab]) > 1 else lab
                  for lab, t in zip(labels, told, strict=True)]
    repeated = {lab for lab in labels if labels.count(lab) > 1}
    return [f"{lab} #{k + 1}" if lab in repeated else lab for k, lab in enumerate(labels)]


def _probe_source(pre: Pretrained) -> str:
    """Which probe ``load_pretrained`` chose, in the report's words."""
    if pre.probe is None:
        return "none"
    if pre.probe_source.startswith("offline"):
        return f"offline linear probe ({probe_path(pre.path).name})"
    return "online probe (trained during pre-training)"


def load_models(
    paths: Sequence[str | os.PathLike[str]],
    labels: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> list[Model]:
    """Load checkpoints; ``labels`` (one per checkpoint, may repeat) name their groups.

    The probe may be missing (see ``cossl_analysis.probes.ensure_probes``).
    """
    if not paths:
        raise AnalysisError("give at least one checkpoint")
    if labels is not None and len(labels) != len(paths):
        raise AnalysisError(f"--labels gives {len(labels)} labels for {len(paths)} checkpoints")
    pretrained = [load_checkpoint(p, device) for p in paths]
    groups = list(labels) if labels is not None else [display_name(p.config.method.name) for p in pretrained]
    return [Model(label, group, pre, _probe_source(pre))
            for label, group, pre in zip(unique_labels(groups, pretrained), groups, pretrained, strict=True)]


def check_resolutions(models: Sequence[Model]) -> None:
    """One-line error when the checkpoints were trained at different resolutions (one shared image set)."""
    if len({m.resolution for m in models}) > 1:
        which = ", ".join(f"{m.label}: {m.resolution} px" for m in models)
        raise AnalysisError(f"the checkpoints were trained at different resolutions ({which}); every analysis uses "
                            "one evaluation set, so compare checkpoints of the same augment.resolution")


@dataclass
class EvalSet:
    """The evaluation images, held in memory as uint8 (corruptions work on uint8).

    Attributes:
        images: uint8 (N, 3, R, R).
        labels: int64 (N,), or None when the images are unlabelled.
        indices: positions of the images within the split (None: all of it, in order).
        split_size: number of images of the split they were drawn from.
        description: where they come from, in words.
        split: ``"val"`` or ``"held-out"``.
        skipped: unreadable images dropped.
    """

    images: Tensor
    labels: Tensor | None
    indices: list[int] | None
    split_size: int
    description: str
    split: str = "val"
    skipped: int = 0
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{tuple(self.images.shape)}".encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        if self.labels is not None:
            digest.update(self.labels.to(torch.int64).contiguous().numpy().tobytes())
        self.fingerprint = digest.hexdigest()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return 0 if self.labels is None else int(self.labels.max()) + 1

    @functools.cached_property
    def pixels(self) -> Tensor:
        """Float images in [0, 1] (what the models and the attacks take)."""
        return pixels(self.images)


def _collate(batch: list[Any]) -> Any:
    from cossl_train.data import collate_skip_none

    return collate_skip_none(batch, n_fields=2)


def load_eval_set(cfg: Config, n_images: int = 0, seed: int = 0, progress: bool = True) -> EvalSet:
    """The validation split of ``cfg.data`` at ``cfg.augment.resolution`` (``eval_splits``).

    Args:
        cfg: the config whose ``data`` and ``augment`` sections pick the images.
        n_images: keep a fixed random subset of this many images (seeded by ``seed``, in split
            order); 0 = all.
        seed: seeds the subset.
        progress: tqdm bar while loading.
    """
    from torch.utils.data import DataLoader, Subset

    from cossl_train.evaluate import eval_splits

    if n_images < 0:
        raise AnalysisError(f"images={n_images} must be >= 0 (0 = the whole split)")
    _, val = eval_splits(cfg.data, cfg.augment)
    where = f" at {cfg.data.val_root or cfg.data.root}" if cfg.data.dataset == "imagefolder" else ""
    held_out = isinstance(val, Subset)  # eval_splits holds out training images when there is no split
    description = (f"{cfg.data.dataset}{where}, "
                   f"{'10% held out of the training images' if held_out else 'validation split'}")
    split_size = len(val)  # type: ignore[arg-type]
    indices: list[int] | None = None
    if 0 < n_images < split_size:
        # a random subset rather than the first N: folder datasets are sorted by class
        generator = torch.Generator().manual_seed(seed)
        indices = sorted(torch.randperm(split_size, generator=generator)[:n_images].tolist())
        val = Subset(val, indices)
    loader = DataLoader(val, batch_size=256, shuffle=False, num_workers=cfg.data.num_workers, collate_fn=_collate)
    images, labels, skipped = [], [], 0
    for batch in tqdm(loader, desc="loading evaluation images", disable=not progress, leave=False):
        skipped += batch.skipped
        if batch.label.numel():
            images.append(batch.image)
            labels.append(batch.label)
    if not labels:
        raise AnalysisError(f"the evaluation set ({description}) has no readable image")
    label_tensor = torch.cat(labels).to(torch.int64)
    return EvalSet(torch.cat(images), None if (label_tensor < 0).any() else label_tensor, indices, split_size,
                   description, "held-out" if held_out else "val", skipped)


def _open_image(spec: str | Path) -> Any:
    """A PIL image from a file path or ``skimage:<name>`` (a scikit-image sample photo, no download)."""
    from PIL import Image

    text = str(spec)
    if text.startswith(SKIMAGE_PREFIX):
        import skimage.data

        name = text[len(SKIMAGE_PREFIX):]
        loader = getattr(skimage.data, name, None)
        if loader is None or not callable(loader):
            raise ValueError(f"{text}: scikit-image has no sample image {name!r} (e.g. astronaut, coffee, chelsea)")
        return Image.fromarray(np.asarray(loader()))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as img:
        img.load()
        return img.copy()


def load_images(specs: Sequence[str | Path], resolution: int) -> Tensor:
    """Image files or ``skimage:<name>`` sample photos as (B, 3, R, R) float32 in [0, 1], through the
    evaluation transform (resize, centre crop, grey -> RGB): as a model sees its validation images."""
    from cossl_train.augment import EvalTransform

    if not specs:
        raise ValueError("load_images needs at least one image")
    tf = EvalTransform(resolution)
    return pixels(torch.stack([tf(_open_image(s)) for s in specs]))
