"""The pre-training loop: one function, ``pretrain(cfg)``, for one CPU, one GPU or torchrun.

Per step: loader-side crops -> device-side photometric views (seeded per step, so a resumed run
draws the same augmentations) -> method loss under autocast -> backward -> (every
``accum_steps``) lr schedule, optimizer step, EMA update of the momentum targets. The online
probe trains on detached features with its own optimizer. A checkpoint is written atomically
after every epoch; a non-finite loss stops the run before anything is written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import distributed as dist_utils
from .augment import BatchPhotometric
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
from .data import build_eval_datasets, build_loader, build_pretrain_dataset
from .ema import cosine_ema_rate, ema_update_
from .methods import build_method
from .metrics import MetricsLogger
from .optim import build_optimizer, effective_lr, set_lr, warmup_cosine

log = logging.getLogger("cossl_train")

CHECKPOINT_NAME = "checkpoint.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; raised before any checkpoint is written."""


class RunExistsError(RuntimeError):
    """The output folder already holds a checkpoint and --resume was not given."""


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32


def setup_logging(out_dir: Path | None = None) -> None:
    """Messages to stderr, and to ``out_dir/train.log`` of the current run (one process may run
    several, as the demo does: each run's file handler replaces the previous one)."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if not any(type(h) is logging.StreamHandler for h in log.handlers):
        log.setLevel(logging.INFO)
        log.propagate = False
        handler = logging.StreamHandler(sys.stderr)
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


def resolve_runtime(cfg: Config) -> Runtime:
    want = cfg.train.device
    if want == "auto":
        if dist_utils.is_distributed() and torch.cuda.is_available():
            want = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        else:
            want = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(want)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={want!r} but CUDA is not available here")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # fixed input sizes: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True
    precision = cfg.train.precision
    if precision == "auto":
        # bf16 autocast on GPUs that support it; fp32 on CPUs, where bf16 without native bf16
        # instructions is emulated (measured 10-15x slower than fp32 on an AVX2 CPU)
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return Runtime(device, torch.bfloat16 if precision == "bf16" else None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """A distinct, reproducible seed for the augmentations of one step of one process."""
    return (seed * 1_000_003 + epoch * 10_007 + step) * 97 + rank


def _all_finite(module: nn.Module) -> bool:
    norms = torch._foreach_norm([p.detach().float() for p in module.parameters()])
    return bool(torch.isfinite(torch.stack(norms)).all())


def pretrain(cfg: Config, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Pre-train ``cfg.method.name`` and return the summary written to ``summary.json``."""
    dist_utils.init_from_env()
    out_dir = Path(cfg.train.out_dir)
    setup_logging(out_dir)
    rt = resolve_runtime(cfg)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    ckpt_path = out_dir / CHECKPOINT_NAME
    main = dist_utils.is_main()

    stored = None
    if ckpt_path.exists():
        if not resume:
            raise RunExistsError(
                f"{ckpt_path} already exists; pass --resume to continue that run or choose another train.out_dir"
            )
        stored = load_checkpoint(ckpt_path)
        check_resume_compatible(stored["config"], cfg, ckpt_path)
    elif resume:
        log.info("--resume: no checkpoint in %s yet, starting from scratch", out_dir)

    # data
    train_ds = build_pretrain_dataset(cfg.data, cfg.augment)
    num_classes = getattr(train_ds, "num_classes", None)
    global_batch = cfg.train.batch_size * world * cfg.train.accum_steps
    steps_per_epoch = len(train_ds) // (cfg.train.batch_size * world) // cfg.train.accum_steps
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} x {world} process(es) x accum {cfg.train.accum_steps} "
            f"is larger than the dataset ({len(train_ds)} images)"
        )
    total_steps = steps_per_epoch * cfg.train.epochs
    peak_lr = effective_lr(cfg.optim, global_batch)
    warmup_steps = int(round(cfg.optim.warmup_epochs * steps_per_epoch))

    # model: seeded so that the same config gives the same initial weights
    seed_everything(cfg.train.seed)
    method = build_method(cfg).to(rt.device)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    probe = nn.Linear(method.encoder.num_features, num_classes).to(rt.device) if (
        cfg.train.online_probe and num_classes) else None
    model: nn.Module = method
    if world > 1:
        model = dist_utils.wrap_ddp(method, rt.device, find_unused=(getattr(method, "co", None) is not None
                                                                     and method.lam == 0))
    optimizer = build_optimizer(method, cfg.optim, peak_lr)
    probe_opt = torch.optim.AdamW(probe.parameters(), lr=cfg.train.probe_lr, weight_decay=0.0) if probe else None
    photometric = [BatchPhotometric(cfg.augment, view=v).to(rt.device) for v in (0, 1)]
    forward = torch.compile(model) if cfg.train.compile else model

    start_epoch, global_step = 0, 0
    if stored is not None:
        load_state(method, stored["model"], ckpt_path, stored["config"])
        optimizer.load_state_dict(stored["optimizer"])
        if probe is not None and stored.get("probe") is not None:
            probe.load_state_dict(stored["probe"])
            probe_opt.load_state_dict(stored["probe_optimizer"])
        start_epoch, global_step = int(stored["epoch"]), int(stored["global_step"])
        set_rng_state(stored["rng"])
        log.info("resumed %s at epoch %d (step %d)", ckpt_path, start_epoch, global_step)
        if start_epoch >= cfg.train.epochs:
            log.info("the run already finished its %d epochs; nothing to do", cfg.train.epochs)
            summary_path = out_dir / "summary.json"
            if summary_path.exists():
                return json.loads(summary_path.read_text())
            return {"epoch": start_epoch, "checkpoint": str(ckpt_path)}

    metrics = MetricsLogger(out_dir, tensorboard=cfg.train.tensorboard, enabled=main)
    if main:
        (out_dir / "config.yaml").write_text(dump_yaml(cfg))
        log.info("method=%s backbone=%s (%d features) device=%s precision=%s world_size=%d",
                 cfg.method.name, cfg.backbone.name, method.encoder.num_features, rt.device,
                 "bf16" if rt.dtype else "fp32", world)
        scale = f" = {cfg.optim.lr} x {global_batch}/256 (optim.lr_scaling=linear)" if (
            cfg.optim.lr_scaling == "linear") else " (optim.lr_scaling=none)"
        log.info("global batch %d (%d per process x %d process(es) x %d accumulation); peak lr %.4g%s",
                 global_batch, cfg.train.batch_size, world, cfg.train.accum_steps, peak_lr, scale)
        log.info("%d images, %d optimizer steps per epoch, %d epochs", len(train_ds), steps_per_epoch,
                 cfg.train.epochs)

    autocast = (lambda: torch.autocast(rt.device.type, dtype=rt.dtype)) if rt.dtype else nullcontext
    summary: dict[str, Any] = {}
    collapse_warned = False
    for epoch in range(start_epoch, cfg.train.epochs):
        method.train()
        loader = build_loader(train_ds, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, epoch=epoch,
                              num_workers=cfg.data.num_workers, drop_last=True, device=rt.device,
                              rank=rank, world_size=world)
        sums: dict[str, float] = {}
        count, probe_correct, probe_total, skipped = 0, 0, 0, 0
        t0 = time.perf_counter()
        micro_steps = steps_per_epoch * cfg.train.accum_steps
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not (progress and main), leave=False)
        for micro, batch in enumerate(loader):
            if micro >= micro_steps:
                break
            v1, v2, y = batch.view1, batch.view2, batch.label
            skipped += batch.skipped
            # unreadable images left fewer than 2 in this batch (BatchNorm cannot train on one):
            # skip it, on every process together, since a process that skipped alone would leave
            # the others waiting in DDP's all-reduce
            if dist_utils.any_process(y.numel() < 2, rt.device):
                continue
            v1 = v1.to(rt.device, non_blocking=True)
            v2 = v2.to(rt.device, non_blocking=True)
            s = step_seed(cfg.train.seed, epoch, micro, rank)
            v1, v2 = photometric[0](v1, seed=s), photometric[1](v2, seed=s + 1)
            if cfg.train.channels_last:
                v1 = v1.contiguous(memory_format=torch.channels_last)
                v2 = v2.contiguous(memory_format=torch.channels_last)
            sync = (micro + 1) % cfg.train.accum_steps == 0
            ctx = model.no_sync() if (world > 1 and not sync) else nullcontext()
            with ctx, autocast():
                out = forward(v1, v2)
            loss = out.loss.float()
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {global_step}; stopped before writing a "
                    f"checkpoint ({ckpt_path} keeps the last good epoch); try a lower optim.lr or train.precision=fp32"
                )
            with ctx:
                (loss / cfg.train.accum_steps).backward()

            if probe is not None:
                y_dev = y.to(rt.device)
                labelled = y_dev >= 0
                if labelled.any():
                    logits = probe(out.features[labelled].float())
                    probe_loss = F.cross_entropy(logits, y_dev[labelled])
                    probe_opt.zero_grad(set_to_none=True)
                    probe_loss.backward()
                    if world > 1:  # keep the probe identical on every process
                        for p in probe.parameters():
                            p.grad = dist_utils.all_reduce_mean(p.grad)
                    probe_opt.step()
                    probe_correct += (logits.argmax(1) == y_dev[labelled]).sum().item()
                    probe_total += int(labelled.sum())

            if sync:
                lr = warmup_cosine(global_step, total_steps, warmup_steps, peak_lr, cfg.optim.min_lr_ratio)
                set_lr(optimizer, lr)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                tau = cosine_ema_rate(global_step, total_steps, cfg.method.ema_base)
                pairs = method.momentum_pairs()
                if pairs:
                    ema_update_(pairs, tau)
                global_step += 1
                bar.update(1)

                z = F.normalize(out.embeddings.float(), dim=1)
                # collapse monitor: std of normalised embeddings x sqrt(D); ~1 healthy, 0 collapsed
                collapse = (z.std(0).mean() * math.sqrt(z.shape[1])).item()
                vals = {"loss": loss.item(), "loss_global": out.loss_global.item(),
                        "loss_local": out.loss_local.item(), "lr": lr, "tau": tau, "embedding_std": collapse}
                for k, v in vals.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                if main and global_step % cfg.train.log_every == 0:
                    metrics.log_step(global_step, {**vals, "epoch": epoch + 1})
                bar.set_postfix(loss=f"{vals['loss']:.3f}", std=f"{collapse:.2f}")
                if collapse < 0.05 and not collapse_warned:
                    log.warning("embeddings look collapsed (normalised std x sqrt(D) = %.3f)", collapse)
                    collapse_warned = True
        bar.close()
        elapsed = time.perf_counter() - t0

        if not _all_finite(method):
            raise NonFiniteLossError(f"weights became non-finite in epoch {epoch + 1}; {ckpt_path} not overwritten")
        epoch_vals = {k: v / max(count, 1) for k, v in sums.items()}
        epoch_vals["online_probe_top1"] = probe_correct / probe_total * 100 if probe_total else float("nan")
        epoch_vals["images_per_s"] = count * global_batch / elapsed
        epoch_vals["skipped_images"] = skipped
        if skipped:
            log.warning("epoch %d: skipped %d unreadable image(s)", epoch + 1, skipped)
        if cfg.train.knn_every and (epoch + 1) % cfg.train.knn_every == 0:
            epoch_vals["knn_top1"] = _knn_now(method, cfg, rt) if main else float("nan")

        if main:
            save_checkpoint(ckpt_path, {
                "config": to_dict(cfg),
                "epoch": epoch + 1,
                "global_step": global_step,
                "model": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "probe": probe.state_dict() if probe is not None else None,
                "probe_optimizer": probe_opt.state_dict() if probe_opt is not None else None,
                "num_classes": num_classes,
                "rng": rng_state(),
                "world_size": world,
            })
            metrics.log_epoch(epoch + 1, epoch_vals)
            log.info("epoch %d/%d %s", epoch + 1, cfg.train.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in epoch_vals.items()))
        summary = {"epoch": epoch + 1, **epoch_vals}
        dist_utils.barrier()

    metrics.close()
    if main:
        summary["checkpoint"] = str(ckpt_path)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _knn_now(method: nn.Module, cfg: Config, rt: Runtime) -> float:
    from .evaluate import extract_features, knn_classify

    train_eval, val_eval = build_eval_datasets(cfg.data, cfg.augment)
    if val_eval is None:
        return float("nan")
    tx, ty = extract_features(method.encoder, train_eval, device=rt.device, progress=False)
    vx, vy = extract_features(method.encoder, val_eval, device=rt.device, progress=False)
    return knn_classify(tx, ty, vx, vy, k=cfg.eval.knn_k, temperature=cfg.eval.knn_temperature)


__all__ = ["pretrain", "NonFiniteLossError", "RunExistsError", "CheckpointError"]
