"""The pre-training loop: ``pretrain(cfg)`` for one CPU, one GPU or torchrun, as named phases (set up,
data, parts, resume, epochs, finish; docs/training.md, "The pre-training loop")."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed as dist_utils
from . import jsonio
from .atomic import atomic_write, atomic_write_text
from .augment import eval_transform
from .checkpoint import (
    CheckpointError,
    check_resume_compatible,
    load_checkpoint,
    load_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import Config, dump_yaml, to_dict
from .data import build_loader, build_pretrain_dataset
from .errors import DataError, NonFiniteLossError, RunExistsError
from .metrics import MetricsLogger
from .optim import effective_lr
from .runtime import Runtime, resolve_runtime
from .step import Schedule, StepResult, TrainParts, build_parts, train_step

log = logging.getLogger("cossl_train")

CHECKPOINT_NAME = "checkpoint.pt"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message is logged, not the stream it was at
    set-up (a replaced or captured stderr would otherwise be written to after it is closed)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(out_dir: Path | None = None) -> None:
    """Messages to stderr, and to ``out_dir/train.log`` of the current run (one process may run
    several, as the demo does: each run's file handler replaces the previous one)."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.setLevel(logging.INFO)
        log.propagate = False
        handler = _StderrHandler()
        handler.setFormatter(fmt)
        log.addHandler(handler)
    for h in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        log.removeHandler(h)
        h.close()
    if out_dir is not None and dist_utils.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(out_dir / "train.log")
        fh.setFormatter(fmt)
        log.addHandler(fh)


# --------------------------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run's place in the world: config, runtime, process, files, and what is stored."""

    cfg: Config
    rt: Runtime
    rank: int
    world: int
    out_dir: Path
    stored: dict[str, Any] | None
    collapse_warned: bool = False
    #: wall time of the epochs trained so far, resumed runs included
    train_seconds: float = 0.0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME


@dataclass
class RunData:
    dataset: Any
    num_classes: int | None
    steps_per_epoch: int
    global_batch: int


@dataclass
class EpochStats:
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    probe_correct: int = 0
    probe_total: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def add(self, res: StepResult) -> None:
        self.probe_correct += res.probe_correct
        self.probe_total += res.probe_total
        if res.stepped:
            for k, v in res.values.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.count += 1


def setup_run(cfg: Config, resume: bool) -> Run:
    """Log to the run folder, pick the runtime, read a stored run."""
    out_dir = Path(cfg.train.out_dir)
    setup_logging(out_dir)
    run = Run(cfg, resolve_runtime(cfg.train.device, cfg.train.precision), dist_utils.rank(),
              dist_utils.world_size(), out_dir, None)
    if run.checkpoint.exists():
        if not resume:
            raise RunExistsError(f"{run.checkpoint} already exists; pass --resume to continue that run or "
                                 "choose another train.out_dir")
        run.stored = load_checkpoint(run.checkpoint)
        check_resume_compatible(run.stored, cfg, run.world, run.checkpoint)
    elif resume:
        log.info("--resume: no checkpoint in %s yet, starting from scratch", out_dir)
    return run


def setup_data(cfg: Config, world: int) -> RunData:
    ds = build_pretrain_dataset(cfg.data, cfg.augment)
    if cfg.train.online_probe and cfg.train.probe_input == "clean" and ds.num_classes:
        ds = ds.with_clean(eval_transform(cfg.augment))  # the probe's images ride with the crops: one decode
    per_step = cfg.train.batch_size * world * cfg.train.accum_steps
    steps = len(ds) // per_step
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    if steps < 1:
        raise DataError(f"train.batch_size={cfg.train.batch_size} x {world} process(es) x accum "
                         f"{cfg.train.accum_steps} is larger than the dataset ({len(ds)} images)")
    return RunData(ds, getattr(ds, "num_classes", None), steps, per_step)


def make_schedule(cfg: Config, data: RunData) -> Schedule:
    return Schedule(steps_per_epoch=data.steps_per_epoch, total_steps=data.steps_per_epoch * cfg.train.epochs,
                    warmup_steps=int(round(cfg.optim.warmup_epochs * data.steps_per_epoch)),
                    peak_lr=effective_lr(cfg.optim, data.global_batch), min_lr_ratio=cfg.optim.min_lr_ratio,
                    ema_base=cfg.method.ema_base)


def restore(parts: TrainParts, run: Run) -> tuple[int, int]:
    """Load the stored run into ``parts``; (first epoch to train, optimizer steps done)."""
    if run.stored is None:
        return 0, 0
    run.train_seconds = float(run.stored.get("train_seconds", 0.0))
    s = run.stored
    load_state(parts.method, s["model"], run.checkpoint, s["config"])
    parts.optimizer.load_state_dict(s["optimizer"])
    if parts.probe is not None and s.get("probe") is not None:
        parts.probe.load_full_state(s["probe"])
    set_rng_state(s["rng"])
    log.info("resumed %s at epoch %d (step %d)", run.checkpoint, s["epoch"], s["global_step"])
    return int(s["epoch"]), int(s["global_step"])


def log_start(run: Run, parts: TrainParts, data: RunData) -> None:
    cfg = run.cfg
    (run.out_dir / "config.yaml").write_text(dump_yaml(cfg))
    log.info("method=%s backbone=%s (%d features, pool MLP %s) device=%s precision=%s (%s) world_size=%d",
             cfg.method.name, cfg.backbone.name, parts.method.encoder.num_features,
             "on" if not isinstance(parts.method.encoder.head, nn.Identity) else "off", run.rt.device,
             run.rt.precision, run.rt.precision_reason, run.world)
    scale = f" = {cfg.optim.lr} x {data.global_batch}/256 (optim.lr_scaling=linear)" if (
        cfg.optim.lr_scaling == "linear") else " (optim.lr_scaling=none)"
    log.info("global batch %d (%d per process x %d process(es) x %d accumulation); peak lr %.4g%s", data.global_batch,
             cfg.train.batch_size, run.world, cfg.train.accum_steps, parts.schedule.peak_lr, scale)
    log.info("loss: %g x the mean over view pairs (2 = the sum over both view orders, as BYOL and MoCo-v3 publish "
             "it; their learning rates assume it); w_s = %g", parts.method.loss.pair_scale, parts.method.local_weight)
    log.info("%d images, %d optimizer steps per epoch, %d epochs", len(data.dataset), data.steps_per_epoch,
             cfg.train.epochs)
    if getattr(data.dataset, "batchable", False):
        log.info("images held in memory: each batch is cropped in one operation in this process "
                 "(data.num_workers=%d applies to images read from files)", cfg.data.num_workers)


def run_epoch(parts: TrainParts, run: Run, data: RunData, epoch: int, global_step: int, metrics: MetricsLogger,
              progress: bool) -> tuple[int, EpochStats]:
    """The optimizer steps of one epoch; returns the new step count and the epoch's sums."""
    cfg, device = run.cfg, run.rt.device
    parts.method.train()
    loader = build_loader(data.dataset, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, epoch=epoch,
                          num_workers=cfg.data.num_workers, drop_last=True, device=device, rank=run.rank,
                          world_size=run.world)
    stats, t0 = EpochStats(), time.perf_counter()
    micro_steps = data.steps_per_epoch * cfg.train.accum_steps
    bar = tqdm(total=data.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
               disable=not (progress and run.main), leave=False)
    for micro, batch in enumerate(loader):
        if micro >= micro_steps:
            break
        stats.skipped += batch.skipped
        # unreadable images left fewer than 2 in this batch (BatchNorm cannot train on one): skip
        # it on every process together, since a process that skipped alone would stall DDP
        if dist_utils.any_process(batch.label.numel() < 2, device):
            continue
        views = [v.to(device, non_blocking=True) for v in (batch.view1, batch.view2, *batch.local_views)]
        try:
            clean = batch.clean.to(device, non_blocking=True) if batch.clean is not None else None
            res = train_step(parts, views, batch.label.to(device), epoch, micro, global_step, run.rank, clean)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"{e}; stopped before writing a checkpoint ({run.checkpoint} keeps the last "
                                     "good epoch); try a lower optim.lr or train.precision=fp32") from None
        stats.add(res)
        if res.stepped:
            global_step += 1
            bar.update(1)
            if run.main and global_step % cfg.train.log_every == 0:
                metrics.log_step(global_step, {**res.values, "epoch": epoch + 1})
            bar.set_postfix(loss=f"{res.values['loss']:.3f}", std=f"{res.values['embedding_std']:.2f}")
    bar.close()
    stats.seconds = time.perf_counter() - t0
    # every process skips the unreadable images of its own shard: count them all
    stats.skipped = int(dist_utils.all_reduce_sum(torch.tensor(float(stats.skipped), device=device)).item())
    return global_step, stats


def _all_finite(module: nn.Module) -> bool:
    norms = torch._foreach_norm([p.detach().float() for p in module.parameters()])
    return bool(torch.isfinite(torch.stack(norms)).all())


def epoch_values(run: Run, parts: TrainParts, data: RunData, epoch: int, stats: EpochStats) -> dict[str, float]:
    """The epoch's row of ``epochs.csv``: means of the step values, probe accuracies, throughput,
    and the evaluations due this epoch (online probe and kNN on the validation split)."""
    cfg = run.cfg
    vals = {k: v / max(stats.count, 1) for k, v in stats.sums.items()}
    if parts.probe is not None:  # no column at all for a run without the online probe
        vals["online_probe_train_top1"] = (100 * stats.probe_correct / stats.probe_total if stats.probe_total
                                           else float("nan"))
    vals["images_per_s"] = stats.count * data.global_batch / stats.seconds if stats.seconds else float("nan")
    vals["skipped_images"] = stats.skipped
    due_probe = parts.probe is not None and cfg.train.probe_eval_every and (epoch + 1) % cfg.train.probe_eval_every == 0
    due_knn = cfg.train.knn_every and (epoch + 1) % cfg.train.knn_every == 0
    if (due_probe or due_knn) and run.main:
        from .evaluate import online_evaluation

        try:
            vals.update(online_evaluation(parts.method.encoder, parts.probe if due_probe else None, cfg,
                                          run.rt.device, knn=bool(due_knn)))
        except DataError as e:  # an unreadable validation split must not stop the pre-training
            log.warning("epoch %d: no evaluation on the validation split (%s)", epoch + 1, e)
    return vals


def end_epoch(parts: TrainParts, run: Run, data: RunData, epoch: int, global_step: int, stats: EpochStats,
              metrics: MetricsLogger) -> dict[str, Any]:
    """Check the weights, evaluate, write the checkpoint and the epoch's metrics."""
    if not _all_finite(parts.method):
        raise NonFiniteLossError(f"weights became non-finite in epoch {epoch + 1}; {run.checkpoint} not overwritten")
    run.train_seconds += stats.seconds
    vals = epoch_values(run, parts, data, epoch, stats)
    if stats.skipped:
        log.warning("epoch %d: skipped %d unreadable image(s)", epoch + 1, stats.skipped)
    if vals.get("embedding_std", 1.0) < 0.05 and not run.collapse_warned:
        log.warning("embeddings look collapsed (normalised std x sqrt(D) = %.3f)", vals["embedding_std"])
        run.collapse_warned = True
    if run.main:
        probe = parts.probe
        save_checkpoint(run.checkpoint, {
            "config": to_dict(run.cfg), "epoch": epoch + 1, "global_step": global_step,
            "model": parts.method.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "probe": probe.full_state() if probe is not None else None,
            "probe_linear": probe.as_linear().state_dict() if probe is not None else None,
            "num_classes": data.num_classes, "rng": rng_state(), "world_size": run.world,
            "train_seconds": run.train_seconds,
        })
        if epoch + 1 in run.cfg.train.keep_epochs:
            keep_checkpoint(run, epoch + 1)
        metrics.log_epoch(epoch + 1, vals)
        log.info("epoch %d/%d %s", epoch + 1, run.cfg.train.epochs, " ".join(f"{k}={v:.4g}" for k, v in vals.items()))
    dist_utils.barrier()
    return {"epoch": epoch + 1, **vals, "train_seconds": run.train_seconds}


def kept_dir(out_dir: Path, epoch: int) -> Path:
    """Where ``train.keep_epochs`` keeps the checkpoint of ``epoch``."""
    return Path(out_dir) / f"epoch{epoch:03d}"


def keep_checkpoint(run: Run, epoch: int) -> None:
    """A copy of this epoch's checkpoint (and the run's config) in :func:`kept_dir`, written atomically."""
    folder = kept_dir(run.out_dir, epoch)
    atomic_write(folder / CHECKPOINT_NAME, lambda handle: handle.write(run.checkpoint.read_bytes()))
    atomic_write_text(folder / "config.yaml", (run.out_dir / "config.yaml").read_text())


def finish(run: Run, metrics: MetricsLogger, summary: dict[str, Any]) -> dict[str, Any]:
    metrics.close()
    if run.main:
        summary["checkpoint"] = str(run.checkpoint)
        (run.out_dir / "summary.json").write_text(jsonio.dumps(summary, indent=2))
    return summary


def _finished(run: Run) -> dict[str, Any]:
    log.info("the run already finished its %d epochs; nothing to do", run.cfg.train.epochs)
    path = run.out_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {"epoch": run.cfg.train.epochs,
                                                               "checkpoint": str(run.checkpoint)}


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def pretrain(cfg: Config, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Pre-train ``cfg.method.name`` and return the summary written to ``summary.json``."""
    # The run's DDP model lives in _pretrain's frame, gone before the group is left.
    with dist_utils.process_group():
        return _pretrain(cfg, resume, progress)


def _pretrain(cfg: Config, resume: bool, progress: bool) -> dict[str, Any]:
    run = setup_run(cfg, resume)
    data = setup_data(cfg, run.world)
    parts = build_parts(cfg, run.rt, make_schedule(cfg, data), data.num_classes, run.world)
    start_epoch, global_step = restore(parts, run)
    if start_epoch >= cfg.train.epochs:
        return _finished(run)
    metrics = MetricsLogger(run.out_dir, tensorboard=cfg.train.tensorboard, enabled=run.main)
    if run.main:
        log_start(run, parts, data)
    summary: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        global_step, stats = run_epoch(parts, run, data, epoch, global_step, metrics, progress)
        summary = end_epoch(parts, run, data, epoch, global_step, stats, metrics)
    return finish(run, metrics, summary)


__all__ = ["pretrain", "NonFiniteLossError", "RunExistsError", "CheckpointError", "CHECKPOINT_NAME"]
