"""One run of an experiment: trained unless its checkpoint is finished, evaluated unless a current
evaluation is stored beside it. The record, ``eval.json``, is the same for the grid and compare."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import jsonio
from ..atomic import atomic_write_text
from ..config import Config, to_dict

log = logging.getLogger("cossl_train")

#: file (beside a run's checkpoint) holding its offline evaluation
EVAL_NAME = "eval.json"


def eval_settings(cfg: Config) -> dict[str, Any]:
    """What an evaluation depends on besides the checkpoint: data, ``eval.*`` and the resolution,
    as JSON reads them back (tuples as lists)."""
    d = to_dict(cfg)
    return json.loads(json.dumps({"eval": d["eval"], "data": d["data"], "resolution": d["augment"]["resolution"]}))


def stored_evaluation(ckpt: Path, cfg: Config) -> dict[str, Any] | None:
    """The record beside ``ckpt`` when it was made from this very file with ``cfg``'s settings."""
    from ..evaluate import is_current

    path = Path(ckpt).parent / EVAL_NAME
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except ValueError:
        return None  # a torn or hand-edited file: evaluate again
    if is_current(stored, ckpt) and stored.get("eval") == eval_settings(cfg) and isinstance(stored.get("epoch"), int):
        return stored
    return None


def ensure_evaluated(ckpt: Path, cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Linear probe and weighted kNN of ``ckpt`` (``evaluate_checkpoint``), stored in ``eval.json``
    beside it and reused while current; the probe is saved beside the checkpoint too."""
    from ..evaluate import PROTOCOLS, evaluate_checkpoint

    ckpt = Path(ckpt)
    stored = stored_evaluation(ckpt, cfg)
    if stored is not None:
        return stored
    record = {**evaluate_checkpoint(ckpt, cfg, progress=progress), "eval": eval_settings(cfg)}
    atomic_write_text(ckpt.parent / EVAL_NAME, jsonio.dumps(record, indent=2) + "\n")
    log.info("%s: %s top-1 %.2f%% top-5 %.2f%%, kNN top-1 %.2f%% (epoch %d)", ckpt.parent.name,
             PROTOCOLS[record["linear_protocol"]], record["linear_top1"], record["linear_top5"], record["knn_top1"],
             record["epoch"])
    return record


def ensure_trained(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Pre-train ``cfg`` in ``train.out_dir``, resuming an interrupted run; a finished one returns at once."""
    from ..trainer import pretrain

    return pretrain(cfg, resume=True, progress=progress)


@dataclass(frozen=True)
class RunStatus:
    """Trained epochs (0: no checkpoint), the epochs asked for, and the current evaluation if any."""

    epoch: int
    epochs: int
    evaluation: dict[str, Any] | None

    @property
    def trained(self) -> bool:
        return self.epoch >= self.epochs

    @property
    def label(self) -> str:
        if self.epoch == 0:
            return "todo"
        if not self.trained:
            return f"partial ({self.epoch}/{self.epochs})"
        return "evaluated" if self.evaluation is not None else "trained"


def checkpoint_meta(path: Path) -> tuple[int, dict[str, Any]]:
    """(epoch, stored config dict) of a checkpoint, read through a memory map so that a
    ResNet-50 checkpoint's tensors are not loaded just to learn how far its run got."""
    from ..checkpoint import CheckpointError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line error
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:160]})") from None
    if not isinstance(state, dict) or "epoch" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a cossl checkpoint")
    return int(state["epoch"]), state["config"]


def run_status(ckpt: Path, cfg: Config) -> RunStatus:
    """How far the run of ``cfg`` got. A current evaluation records the epoch, so only runs without
    one pay for reading the checkpoint (about a second for a small model: unpickling its tensors'
    metadata, not their bytes)."""
    epochs = cfg.train.epochs
    if not Path(ckpt).is_file():
        return RunStatus(0, epochs, None)
    stored = stored_evaluation(ckpt, cfg)
    if stored is not None:
        return RunStatus(stored["epoch"], epochs, stored)
    return RunStatus(checkpoint_meta(ckpt)[0], epochs, None)
