"""Robustness sweeps over several checkpoints, computed cell by cell and resumable.

A *cell* is one accuracy: one checkpoint, one sweep, one setting, one level, e.g.
(CO-BYOL, corruption, ``gaussian_noise``, severity 3). Every cell is the top-1 accuracy of the
checkpoint's frozen encoder + global mean pooling + linear probe, in eval mode, on one labelled
evaluation set of images in [0, 1] pixel space (normalisation lives inside the encoder). Sweeps:

* ``clean``: no corruption (always run; the reference of the other sweeps).
* ``corruption``: ImageNet-C corruptions of ``imagecorruptions`` (``cossl_analysis.corruptions``)
  at severities 1-5. A corrupted set is made once per (corruption, severity), shared by every
  checkpoint, and cached on disk (``corrupt_batch(cache_dir=...)``), using every core by default.
* ``adversarial``: FGSM and PGD (L-inf) from ``torchattacks`` at budgets given in /255 units
  (``cossl_analysis.adversarial``); budgets are in pixel space because the attacked model is
  encoder (with its normalisation) + pooling + probe.
* ``internal``: noise or zeroing of an internal feature map (``cossl_analysis.internal_corruption``).

The large-crop study needs no extra cell: it reads each checkpoint's pre-training crop scale
(``augment.c_min``) from its config and plots the clean (and mean corruption) accuracy against it.

Resume: a :class:`CellStore` (a JSON file) receives every cell as soon as it is computed, written
atomically; a cell's key holds everything its value depends on (a hash of the encoder and probe
weights, a hash of the evaluation images and labels, and the sweep's own parameters), so a rerun
skips finished cells, and a changed checkpoint or evaluation set is recomputed rather than reused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis.adversarial import ATTACKS, attack_accuracy
from cossl_analysis.corruptions import CORRUPTION_GROUPS, CORRUPTIONS, SEVERITIES, corrupt_batch
from cossl_analysis.internal_corruption import DEFAULT_STRENGTHS, internal_corruption_sweep
from cossl_train.atomic import atomic_write
from cossl_train.checkpoint import Pretrained, load_pretrained
from cossl_train.config import Config

__all__ = [
    "INTERNAL_KINDS",
    "METHOD_NAMES",
    "SWEEPS",
    "Cell",
    "CellStore",
    "EvalSet",
    "Model",
    "RobustnessError",
    "SweepOptions",
    "SweepResult",
    "accuracy",
    "check_compatible",
    "compute_cell",
    "ensure_probes",
    "load_eval_set",
    "load_models",
    "parse_corruptions",
    "parse_eps",
    "parse_severities",
    "plan_cells",
    "preflight",
    "run_sweeps",
]

#: the optional sweeps (``clean`` always runs)
SWEEPS: tuple[str, ...] = ("corruption", "adversarial", "internal")
INTERNAL_KINDS: tuple[str, ...] = ("noise", "zero")
#: display names of ``method.name``
METHOD_NAMES: dict[str, str] = {"byol": "BYOL", "co_byol": "CO-BYOL", "simclr": "SimCLR", "co_simclr": "CO-SimCLR"}

# Bump when anything changes what a cell key maps to (so old stores are never misread).
_STORE_FORMAT = "cossl-robustness-cells"
_STORE_VERSION = 1


class RobustnessError(ValueError):
    """Bad input for the robustness sweeps; the message is one line."""


# --------------------------------------------------------------------------------------------
# Parsing the sweep settings (shared by the CLI and by callers that build options themselves)
# --------------------------------------------------------------------------------------------


def _split(spec: str) -> list[str]:
    return [part.strip() for part in spec.split(",") if part.strip()]


def parse_corruptions(spec: str) -> tuple[str, ...]:
    """``"all"`` (the 19 of ``CORRUPTIONS``), ``"common"`` (the 15 ImageNet-C ones), group names of
    ``CORRUPTION_GROUPS`` (``noise``, ``blur``, ``weather``, ``digital``, ``extra``) and corruption
    names, comma-separated; duplicates dropped, canonical order kept."""
    chosen: set[str] = set()
    for part in _split(spec):
        if part == "all":
            chosen.update(CORRUPTIONS)
        elif part == "common":
            chosen.update(CORRUPTIONS[:15])
        elif part in CORRUPTION_GROUPS:
            chosen.update(CORRUPTION_GROUPS[part])
        elif part in CORRUPTIONS:
            chosen.add(part)
        else:
            raise RobustnessError(
                f"unknown corruption {part!r}; valid: all, common, {', '.join(CORRUPTION_GROUPS)}, "
                f"{', '.join(CORRUPTIONS)}"
            )
    if not chosen:
        raise RobustnessError(f"no corruption selected by {spec!r}")
    return tuple(name for name in CORRUPTIONS if name in chosen)


def parse_severities(spec: str) -> tuple[int, ...]:
    """Comma-separated integers from 1 to 5, e.g. ``"1,3,5"``."""
    out: list[int] = []
    for part in _split(spec):
        try:
            value = int(part)
        except ValueError:
            raise RobustnessError(f"severity {part!r} is not an integer from 1 to 5") from None
        if value not in SEVERITIES:
            raise RobustnessError(f"severity {value} is outside 1-5 (imagecorruptions has severities 1 to 5)")
        out.append(value)
    if not out:
        raise RobustnessError(f"no severity given in {spec!r}")
    return tuple(sorted(set(out)))


def parse_eps(spec: str) -> tuple[float, ...]:
    """Comma-separated L-inf budgets in /255 units, e.g. ``"0.5,1,2,4"`` (0 is the clean accuracy)."""
    out: list[float] = []
    for part in _split(spec):
        try:
            value = float(part)
        except ValueError:
            raise RobustnessError(f"eps {part!r} is not a number (budgets are in /255 units, e.g. 0.5,1,2,4)") from None
        if not 0 <= value <= 255:  # also rejects NaN
            raise RobustnessError(f"eps {part} must be within 0-255 (budgets are in /255 units of pixel values)")
        out.append(value)
    if not out:
        raise RobustnessError(f"no budget given in {spec!r}")
    return tuple(sorted(set(out)))


def _parse_choices(spec: str, valid: Sequence[str], what: str, allow_none: bool = False) -> tuple[str, ...]:
    parts = _split(spec)
    if allow_none and parts == ["none"]:
        return ()
    for part in parts:
        if part not in valid:
            raise RobustnessError(f"unknown {what} {part!r}; valid: {', '.join(valid)}{', none' if allow_none else ''}")
    if not parts:
        raise RobustnessError(f"no {what} given in {spec!r}")
    return tuple(name for name in valid if name in parts)


def parse_attacks(spec: str) -> tuple[str, ...]:
    """Comma-separated attacks out of ``ATTACKS`` (``fgsm``, ``pgd``)."""
    return _parse_choices(spec, ATTACKS, "attack")


def parse_internal_kinds(spec: str) -> tuple[str, ...]:
    """Comma-separated internal corruption kinds: ``noise``, ``zero``."""
    return _parse_choices(spec, INTERNAL_KINDS, "internal corruption kind")


def parse_sweeps(spec: str) -> tuple[str, ...]:
    """Comma-separated sweeps out of ``SWEEPS``, or ``none`` (clean accuracy and large-crop study only)."""
    return _parse_choices(spec, SWEEPS, "sweep", allow_none=True)


def parse_strengths(spec: str) -> tuple[float, ...]:
    """Comma-separated internal corruption strengths (>= 0)."""
    out: list[float] = []
    for part in _split(spec):
        try:
            value = float(part)
        except ValueError:
            raise RobustnessError(f"strength {part!r} is not a number") from None
        if not value >= 0:
            raise RobustnessError(f"strength {part} must be >= 0")
        out.append(value)
    if not out:
        raise RobustnessError(f"no strength given in {spec!r}")
    return tuple(sorted(set(out)))


@dataclass
class SweepOptions:
    """What to sweep and how; every field that changes a cell's value is part of its key."""

    sweeps: tuple[str, ...] = SWEEPS
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    #: L-inf budgets in /255 units
    eps_255: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    attacks: tuple[str, ...] = ATTACKS
    pgd_steps: int = 10
    internal_kinds: tuple[str, ...] = ("noise",)
    #: None: ``DEFAULT_STRENGTHS[kind]`` for each kind
    internal_strengths: tuple[float, ...] | None = None
    #: dotted submodule of the encoder whose output is corrupted ("" = the final feature map)
    internal_module: str = ""
    #: seeds the corruption draws, PGD's random start and the internal noise
    seed: int = 0
    #: images below this size are upsampled for imagecorruptions (see ``cossl_analysis.corruptions``)
    min_size: int = 32
    #: corruption worker processes (None: every CPU this process may use)
    workers: int | None = None
    cache_dir: Path | None = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        for sweep in self.sweeps:
            if sweep not in SWEEPS:
                raise RobustnessError(f"unknown sweep {sweep!r}; valid: {', '.join(SWEEPS)}")
        parse_corruptions(",".join(self.corruptions))  # the same checks as on the command line
        parse_severities(",".join(map(str, self.severities)))
        parse_eps(",".join(map(str, self.eps_255)))
        parse_attacks(",".join(self.attacks))
        parse_internal_kinds(",".join(self.internal_kinds))
        if self.internal_strengths is not None:
            parse_strengths(",".join(map(str, self.internal_strengths)))
            if "zero" in self.internal_kinds and max(self.internal_strengths) > 1:
                raise RobustnessError("internal 'zero' strengths are fractions of units zeroed and must be <= 1")
        if self.pgd_steps < 1:
            raise RobustnessError(f"--pgd-steps must be at least 1, got {self.pgd_steps}")
        if self.workers is not None and self.workers < 1:
            raise RobustnessError(f"--workers must be at least 1, got {self.workers}")
        if self.batch_size < 1:
            raise RobustnessError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.min_size < 32:
            raise RobustnessError(f"--min-size must be at least 32 (imagecorruptions' minimum), got {self.min_size}")

    def strengths(self, kind: str) -> tuple[float, ...]:
        """The internal corruption strengths swept for ``kind``."""
        return self.internal_strengths if self.internal_strengths is not None else DEFAULT_STRENGTHS[kind]


# --------------------------------------------------------------------------------------------
# Evaluation set and models
# --------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """The labelled evaluation images, held in memory as uint8 (corruptions work on uint8)."""

    #: uint8 (N, 3, R, R)
    images: Tensor
    #: int64 (N,)
    labels: Tensor
    #: indices into the validation split (None: all of it, in order)
    indices: list[int] | None
    #: size of the split the images were drawn from
    split_size: int
    description: str
    skipped: int = 0
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{tuple(self.images.shape)}".encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.to(torch.int64).contiguous().numpy().tobytes())
        self.fingerprint = digest.hexdigest()

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    @functools.cached_property
    def pixels(self) -> Tensor:
        """Float images in [0, 1] (what the models and the attacks take)."""
        return self.images.float() / 255


def _tensor_digest(digest: Any, state: dict[str, Tensor]) -> None:
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        # via uint8 bytes: numpy has no bfloat16, the bytes are what identify the weights
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def weights_fingerprint(*modules: nn.Module | None) -> str:
    """Content hash (hex) of the modules' state dicts: equal weights, equal fingerprint."""
    digest = hashlib.blake2b(digest_size=16)
    for module in modules:
        digest.update(b"|none|" if module is None else b"|module|")
        if module is not None:
            _tensor_digest(digest, module.state_dict())
    return digest.hexdigest()


@dataclass
class Model:
    """A checkpoint ready for the sweeps: encoder, linear probe, and what the report says about them."""

    label: str
    pretrained: Pretrained
    #: online probe (pre-training) | offline linear probe (<name>.probe.pt) | trained by cossl-robustness
    probe_source: str

    @property
    def path(self) -> Path:
        return self.pretrained.path

    @property
    def config(self) -> Config:
        return self.pretrained.config

    @property
    def method(self) -> str:
        return METHOD_NAMES.get(self.config.method.name, self.config.method.name)

    @property
    def c_min(self) -> float:
        return float(self.config.augment.c_min)

    @property
    def resolution(self) -> int:
        return int(self.config.augment.resolution)

    @functools.cached_property
    def classifier(self) -> nn.Module:
        """encoder + mean pooling + probe: [0, 1] images -> logits."""
        return self.pretrained.classifier()

    @functools.cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.pretrained.encoder, self.pretrained.probe)


def _default_labels(pretrained: Sequence[Pretrained]) -> list[str]:
    """Method names (BYOL, CO-BYOL, ...), made unique by c_min, then by folder, then by position."""
    labels = [METHOD_NAMES.get(p.config.method.name, p.config.method.name) for p in pretrained]

    def duplicated(names: list[str]) -> set[str]:
        return {n for n in names if names.count(n) > 1}

    dup = duplicated(labels)
    labels = [f"{lab} c_min={p.config.augment.c_min:g}" if lab in dup else lab
              for lab, p in zip(labels, pretrained, strict=True)]
    dup = duplicated(labels)
    labels = [f"{lab} ({p.path.parent.name})" if lab in dup else lab for lab, p in zip(labels, pretrained, strict=True)]
    dup = duplicated(labels)
    return [f"{lab} #{i + 1}" if lab in dup else lab for i, lab in enumerate(labels)]


def load_models(
    paths: Sequence[str | os.PathLike[str]], labels: Sequence[str] | None = None, device: str | torch.device = "cpu"
) -> list[Model]:
    """Load checkpoints (``load_pretrained``); the probe may be missing (see :func:`ensure_probes`).

    Labels default to the method names, made unique (see ``_default_labels``).
    """
    if not paths:
        raise RobustnessError("give at least one checkpoint")
    pretrained = [load_pretrained(path, device) for path in paths]
    if labels is None:
        labels = _default_labels(pretrained)
    if len(labels) != len(pretrained):
        raise RobustnessError(f"--labels gives {len(labels)} labels for {len(pretrained)} checkpoints")
    if len(set(labels)) != len(labels):
        raise RobustnessError(f"--labels must be unique, got {', '.join(labels)}")
    models = []
    for label, pre in zip(labels, pretrained, strict=True):
        if pre.path.with_suffix(".probe.pt").is_file():  # load_pretrained prefers it (DESIGN 8: say which)
            source = f"offline linear probe ({pre.path.with_suffix('.probe.pt').name})"
        elif pre.probe is not None:
            source = "online probe (trained during pre-training)"
        else:
            source = "none"
        models.append(Model(label, pre, source))
    return models


def check_compatible(models: Sequence[Model], train_probe: bool) -> None:
    """One-line errors for a checkpoint without probe (unless ``train_probe``) or differing resolutions."""
    if not train_probe:
        for model in models:
            if model.pretrained.probe is None:
                raise RobustnessError(
                    f"{model.path} has no linear probe; run `cossl-train linear-probe {model.path}` first "
                    "or pass --train-probe"
                )
    resolutions = {model.resolution for model in models}
    if len(resolutions) > 1:
        which = ", ".join(f"{m.label}: {m.resolution} px" for m in models)
        raise RobustnessError(
            f"the checkpoints were trained at different resolutions ({which}); the sweeps share one evaluation set, "
            "so compare checkpoints of the same augment.resolution"
        )


def _collate(batch: list[Any]) -> Any:
    from cossl_train.data import collate_skip_none

    return collate_skip_none(batch, n_fields=2)


def load_eval_set(cfg: Config, n_images: int = 0, seed: int = 0, progress: bool = True) -> EvalSet:
    """The validation split of ``cfg.data`` at ``cfg.augment.resolution`` (``eval_splits``).

    Args:
        cfg: config whose ``data`` and ``augment`` sections pick the data (usually the first
            checkpoint's, with ``data.*`` overrides).
        n_images: keep a fixed random subset of this many images (seeded by ``seed``); 0 = all.
        seed: seeds the subset.
        progress: tqdm bar while loading.

    Raises:
        RobustnessError: the split has no labels, or no readable image.
    """
    from torch.utils.data import DataLoader, Subset

    from cossl_train.evaluate import eval_splits

    if n_images < 0:
        raise RobustnessError(f"--images must be >= 0 (0 = the whole split), got {n_images}")
    _, val = eval_splits(cfg.data, cfg.augment, seed=cfg.train.seed)
    dataset = cfg.data.dataset
    where = f" at {cfg.data.val_root or cfg.data.root}" if dataset == "imagefolder" else ""
    held_out = isinstance(val, Subset)  # eval_splits holds out training images when there is no split
    description = f"{dataset}{where}, {'10% held out of the training images' if held_out else 'validation split'}"
    split_size = len(val)  # type: ignore[arg-type]
    indices: list[int] | None = None
    if 0 < n_images < split_size:
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
        raise RobustnessError(f"the evaluation set ({description}) has no readable image")
    label_tensor = torch.cat(labels).to(torch.int64)
    if (label_tensor < 0).any():
        raise RobustnessError(
            f"the evaluation set ({description}) has no labels; the sweeps score top-1 accuracy and need "
            "labelled images (class subfolders, e.g. data.val_root=DIR)"
        )
    return EvalSet(torch.cat(images), label_tensor, indices, split_size, description, skipped)


def _probe_cache_key(model: Model, cfg: Config) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(weights_fingerprint(model.pretrained.encoder).encode())
    settings = {"data": vars(cfg.data), "eval": vars(cfg.eval), "seed": cfg.train.seed,
                "resolution": cfg.augment.resolution}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def ensure_probes(
    models: Sequence[Model],
    cfg: Config,
    probe_dir: Path,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[Model]:
    """Give every probe-less model a linear probe trained on the training split of ``cfg.data``.

    Same protocol as ``cossl-train linear-probe`` (``extract_features`` + ``linear_probe`` with
    ``cfg.eval``'s settings). The probe is saved in ``probe_dir`` (never beside the user's
    checkpoint) and reused by a resumed run, so resumed cells keep their model fingerprint.
    """
    from cossl_train.evaluate import eval_splits, extract_features, linear_probe

    out = []
    for model in models:
        if model.pretrained.probe is not None:
            out.append(model)
            continue
        path = probe_dir / f"{_probe_cache_key(model, cfg)}.probe.pt"
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
        else:
            train, val = eval_splits(cfg.data, cfg.augment, seed=cfg.train.seed)
            encoder, bs = model.pretrained.encoder, cfg.eval.linear_batch_size
            tx, ty = extract_features(encoder, train, bs, device, progress=progress, desc=f"encode train {model.label}")
            vx, vy = extract_features(encoder, val, bs, device, progress=progress, desc=f"encode val {model.label}")
            if (ty < 0).any() or (vy < 0).any():
                raise RobustnessError(f"--train-probe needs labelled training images, but data.dataset="
                                      f"{cfg.data.dataset} data.root={cfg.data.root!r} has unlabelled images")
            res = linear_probe(tx, ty, vx, vy, epochs=cfg.eval.linear_epochs, lr=cfg.eval.linear_lr,
                               batch_size=bs, weight_decay=cfg.eval.linear_weight_decay, seed=cfg.train.seed,
                               progress=progress)
            stored = {"probe": res.probe.state_dict(), "top1": res.top1, "epochs": cfg.eval.linear_epochs}
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda handle, s=stored: torch.save(s, handle))
        weight = stored["probe"]["weight"]
        probe = nn.Linear(weight.shape[1], weight.shape[0])
        probe.load_state_dict(stored["probe"])
        probe = probe.to(device).eval()
        source = (f"linear probe trained by cossl-robustness ({stored['epochs']} epochs, "
                  f"top-1 {stored['top1']:.1f}% on the full validation split; {path.name})")
        out.append(Model(model.label, replace(model.pretrained, probe=probe), source))
    return out


def check_classes(models: Sequence[Model], data: EvalSet) -> None:
    """One-line error when a probe predicts fewer classes than the evaluation set has."""
    for model in models:
        probe = model.pretrained.probe
        if probe is not None and probe.out_features < data.num_classes:
            raise RobustnessError(
                f"the probe of {model.label} predicts {probe.out_features} classes but the evaluation set has labels "
                f"up to {data.num_classes - 1}; evaluate on the data the probe was trained for (data.* overrides)"
            )


# --------------------------------------------------------------------------------------------
# Cells and their store
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One setting of one sweep. ``level``: severity, eps (/255) or strength; None for ``clean``."""

    sweep: str
    setting: str
    level: float | None = None

    def key(self, model: Model, data: EvalSet, opts: SweepOptions) -> str:
        """Everything the accuracy depends on; readable after the two hashes."""
        if self.sweep == "corruption":
            extra = f"seed={opts.seed},min_size={opts.min_size}"
        elif self.sweep == "adversarial":
            # PGD's step size is 2.5 eps / steps (cossl_analysis.adversarial.default_alpha)
            extra = f"seed={opts.seed}" + (f",steps={opts.pgd_steps}" if self.setting == "pgd" else "")
        elif self.sweep == "internal":
            extra = f"seed={opts.seed},module={opts.internal_module}"
        else:
            extra = ""
        level = "" if self.level is None else repr(float(self.level))
        return f"{model.fingerprint}/{data.fingerprint}/{self.sweep}/{self.setting}/{level}/{extra}"

    def columns(self) -> dict[str, Any]:
        """The long-format columns that place this cell (severity / eps_255 / strength)."""
        return {
            "severity": int(self.level) if self.sweep == "corruption" and self.level is not None else None,
            "eps_255": float(self.level) if self.sweep == "adversarial" and self.level is not None else None,
            "strength": float(self.level) if self.sweep == "internal" and self.level is not None else None,
        }


def plan_cells(opts: SweepOptions) -> list[Cell]:
    """Every cell of a model, in the order they are computed: cheap sweeps first, so that a
    failing sweep shows up before hours of corruptions, and so an interrupted run has them."""
    cells = [Cell("clean", "clean")]
    if "internal" in opts.sweeps:
        cells += [Cell("internal", kind, float(s)) for kind in opts.internal_kinds for s in opts.strengths(kind)]
    if "adversarial" in opts.sweeps:
        cells += [Cell("adversarial", attack, float(eps)) for attack in opts.attacks for eps in opts.eps_255]
    if "corruption" in opts.sweeps:
        cells += [Cell("corruption", name, int(s)) for name in opts.corruptions for s in opts.severities]
    return cells


class CellStore:
    """Finished cells, in a JSON file rewritten atomically after every cell.

    A run killed at any moment leaves either the previous or the new file, never a torn one, so
    the next run loses at most the cell that was being computed.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.cells: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as err:
                raise RobustnessError(f"{self.path} is not readable ({err}); delete it to start afresh") from None
            if not isinstance(data, dict) or data.get("format") != _STORE_FORMAT:
                raise RobustnessError(f"{self.path} is not a cossl-robustness cell store; use another --out")
            if data.get("version") == _STORE_VERSION:  # an older version is recomputed, not misread
                self.cells = dict(data.get("cells", {}))

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def __len__(self) -> int:
        return len(self.cells)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.cells.get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` under ``key`` and write the file (atomically) before returning."""
        self.cells[key] = record
        payload = {"format": _STORE_FORMAT, "version": _STORE_VERSION, "cells": self.cells}
        text = json.dumps(payload, indent=1, sort_keys=True).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda handle: handle.write(text))


# --------------------------------------------------------------------------------------------
# Computing cells
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on uint8 (N, 3, H, W) or float [0, 1] images."""
    from cossl_analysis._utils import eval_mode, model_device

    device = model_device(model)
    correct = 0
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            pred = model(x).argmax(dim=1).cpu()
            correct += int((pred == labels[start : start + batch_size]).sum())
    return correct / len(images)


def compute_cell(model: Model, cell: Cell, data: EvalSet, opts: SweepOptions, corrupted: Tensor | None = None) -> float:
    """The accuracy of ``model`` for ``cell``.

    ``corrupted``: the corrupted uint8 images for a ``corruption`` cell (made by the caller once
    per (corruption, severity) and shared by all models).
    """
    if cell.sweep == "clean":
        return accuracy(model.classifier, data.images, data.labels, opts.batch_size)
    if cell.sweep == "corruption":
        if corrupted is None:
            raise ValueError("a corruption cell needs the corrupted images")
        return accuracy(model.classifier, corrupted, data.labels, opts.batch_size)
    if cell.sweep == "adversarial":
        assert cell.level is not None
        return attack_accuracy(model.classifier, data.pixels, data.labels, attack=cell.setting,
                               eps=cell.level / 255, steps=opts.pgd_steps, batch_size=opts.batch_size,
                               seed=opts.seed)
    if cell.sweep == "internal":
        assert cell.level is not None and model.pretrained.probe is not None
        res = internal_corruption_sweep(model.pretrained.encoder, model.pretrained.probe, data.pixels, data.labels,
                                        module_name=opts.internal_module, kind=cell.setting,  # type: ignore[arg-type]
                                        strengths=[cell.level], seed=opts.seed, batch_size=opts.batch_size)
        return float(res["accuracy"][0])
    raise ValueError(f"unknown sweep {cell.sweep!r}")


@dataclass
class SweepResult:
    """The records of one run (one per model and cell, long format) and how they were obtained."""

    models: list[Model]
    data: EvalSet
    opts: SweepOptions
    records: list[dict[str, Any]]
    computed: int
    reused: int
    seconds: float


def preflight(models: Sequence[Model], opts: SweepOptions) -> None:
    """Checks that would otherwise fail mid-run: sweep dependencies and the internal module name."""
    _check_dependencies(opts)
    _check_internal_module(models, opts)


def _check_dependencies(opts: SweepOptions) -> None:
    """Fail in a second, with one line, rather than after the cheaper sweeps have run."""
    if "corruption" in opts.sweeps:
        from cossl_analysis.corruptions import import_imagecorruptions

        import_imagecorruptions()
    if "adversarial" in opts.sweeps:
        try:
            import torchattacks  # noqa: F401
        except ModuleNotFoundError as err:
            raise RobustnessError(f"the adversarial sweep needs torchattacks ({err}); install it with "
                                  "`pip install --no-deps torchattacks==3.5.1` or leave it out with --sweeps") from None


def _check_internal_module(models: Iterable[Model], opts: SweepOptions) -> None:
    if "internal" not in opts.sweeps:
        return
    for model in models:
        try:
            model.pretrained.encoder.get_submodule(opts.internal_module)
        except AttributeError:
            raise RobustnessError(
                f"the encoder of {model.label} has no submodule {opts.internal_module!r} "
                "(--internal-module; e.g. backbone.layer3, or '' for the final feature map)"
            ) from None


def run_sweeps(
    models: Sequence[Model], data: EvalSet, opts: SweepOptions, store: CellStore, progress: bool = True
) -> SweepResult:
    """Compute every cell of every model that ``store`` does not hold yet, storing each at once.

    Corrupted sets are made once per (corruption, severity), only when some model still needs
    them, and cached in ``opts.cache_dir`` for later runs.
    """
    preflight(models, opts)
    cells = plan_cells(opts)
    keys = {(i, cell): cell.key(model, data, opts) for i, model in enumerate(models) for cell in cells}
    done_at_start = {job for job, key in keys.items() if key in store}
    start = time.perf_counter()
    computed = 0
    bar = tqdm(total=len(keys), initial=len(done_at_start), desc="robustness cells", unit="cell",
               disable=not progress, dynamic_ncols=True)
    corrupted_for: tuple[str, int] | None = None
    corrupted: Tensor | None = None
    try:
        for cell in cells:
            for i, model in enumerate(models):
                key = keys[(i, cell)]
                if key in store:  # finished earlier, or by a model with identical weights
                    if (i, cell) not in done_at_start:
                        bar.update(1)
                    continue
                what = cell.sweep if cell.sweep == cell.setting else f"{cell.sweep} {cell.setting}"
                level = "" if cell.level is None else f" {cell.level:g}"
                bar.set_postfix_str(f"{model.label}: {what}{level}", refresh=True)
                if cell.sweep == "corruption":
                    assert cell.level is not None
                    wanted = (cell.setting, int(cell.level))
                    if corrupted_for != wanted:
                        bar.set_postfix_str(f"corrupting: {cell.setting} severity {int(cell.level)}", refresh=True)
                        corrupted = corrupt_batch(data.images, cell.setting, int(cell.level), seed=opts.seed,
                                                  workers=opts.workers, cache_dir=opts.cache_dir,
                                                  min_size=opts.min_size)
                        corrupted_for = wanted
                t0 = time.perf_counter()
                value = compute_cell(model, cell, data, opts, corrupted if cell.sweep == "corruption" else None)
                if not (isinstance(value, float) and 0.0 <= value <= 1.0):  # NaN fails too
                    raise RuntimeError(f"cell {key} gave accuracy {value!r}")
                store.put(key, {"accuracy": value, "n_images": len(data.labels), "seconds": time.perf_counter() - t0,
                                "first_label": model.label, "first_checkpoint": str(model.path),
                                "sweep": cell.sweep, "setting": cell.setting, "level": cell.level})
                computed += 1
                bar.update(1)
    finally:
        bar.close()
    records = []
    for cell in cells:
        for i, model in enumerate(models):
            stored = store.get(keys[(i, cell)])
            assert stored is not None
            records.append({"checkpoint": str(model.path), "label": model.label, "method": model.method,
                            "c_min": model.c_min, "sweep": cell.sweep, "setting": cell.setting, **cell.columns(),
                            "accuracy": stored["accuracy"], "n_images": stored["n_images"]})
    return SweepResult(list(models), data, opts, records, computed, len(keys) - computed,
                       time.perf_counter() - start)
