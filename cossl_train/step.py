"""One training step, shared by the trainer and the benchmark.

``train_step`` = device-side photometric augmentation of every view (seeded per view, step and
process) -> method loss under autocast -> backward -> online probe -> every ``accum_steps``
micro-steps: gradient clipping, learning-rate schedule, optimizer step, EMA of the momentum
targets. :func:`build_parts` assembles what a step needs from a config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed as dist_utils
from .augment import BatchPhotometric
from .config import Config
from .ema import cosine_ema_rate, ema_update_
from .errors import NonFiniteLossError
from .methods import SSLMethod, build_method
from .optim import build_optimizer, set_lr, warmup_cosine
from .probe import OnlineProbe
from .runtime import Runtime, seed_everything
from .seeds import augment_seed


@dataclass(frozen=True)
class Schedule:
    """Learning-rate and EMA schedules over the optimizer steps of a run."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    min_lr_ratio: float
    ema_base: float

    def lr(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr_ratio)

    def ema(self, step: int) -> float:
        return cosine_ema_rate(step, self.total_steps, self.ema_base)

    def epoch(self, step: int) -> float:
        """Fractional epoch of optimizer step ``step`` (DINO's per-epoch schedules read it)."""
        return step / self.steps_per_epoch


@dataclass
class TrainParts:
    """Everything a training step touches."""

    cfg: Config
    rt: Runtime
    method: SSLMethod
    model: nn.Module  #: the method, wrapped in DDP under torchrun
    forward: nn.Module  #: ``model``, or its ``torch.compile`` form
    optimizer: torch.optim.Optimizer
    photometric: list[BatchPhotometric]  #: view 0, view 1 (and small crops, when multi-crop is on)
    schedule: Schedule
    probe: OnlineProbe | None = None


@dataclass
class StepResult:
    """What one micro-step reports; ``values`` only after an optimizer step (else empty)."""

    values: dict[str, float] = field(default_factory=dict)
    probe_correct: int = 0
    probe_total: int = 0

    @property
    def stepped(self) -> bool:
        return bool(self.values)


def build_photometric(cfg: Config, rt: Runtime) -> list[BatchPhotometric]:
    views = [BatchPhotometric(cfg.augment, view=v).to(rt.device) for v in (0, 1)]
    if cfg.augment.local_crops:
        views.append(BatchPhotometric(cfg.augment, view="local").to(rt.device))
    return views


def build_parts(cfg: Config, rt: Runtime, schedule: Schedule, num_classes: int | None = None,
                world: int = 1) -> TrainParts:
    """The seeded method (the same config gives the same initial weights), its optimizer, the
    augmentations, and the online probe when ``num_classes`` is known."""
    seed_everything(cfg.train.seed)
    method = build_method(cfg).to(rt.device)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    probe = None
    if cfg.train.online_probe and num_classes:
        probe = OnlineProbe(method.encoder.num_features, num_classes, cfg.train.probe_lr).to(rt.device)
    model: nn.Module = method
    if world > 1:
        # with w_s = 0 the CO heads get no gradient: DDP must be told to expect unused parameters
        unused = method.co is not None and method.local_weight == 0
        model = dist_utils.wrap_ddp(method, rt.device, find_unused=unused)
    optimizer = build_optimizer(method, cfg.optim, schedule.peak_lr)
    forward = torch.compile(model) if cfg.train.compile else model
    return TrainParts(cfg, rt, method, model, forward, optimizer, build_photometric(cfg, rt), schedule, probe)


def clean_features(parts: TrainParts, clean: Tensor) -> Tensor:
    """Global representations (B, C) of uint8 images (B, 3, R, R), without gradient, in eval mode
    (no BatchNorm statistics move: the training computation is untouched)."""
    enc = parts.method.encoder
    was = enc.training
    enc.eval()
    x = clean.float().div_(255)
    if parts.cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), parts.rt.autocast():
        feats = enc.pool(enc(x))
    enc.train(was)
    return feats


def probe_step(parts: TrainParts, view_features: Tensor, labels: Tensor, clean: Tensor | None) -> tuple[int, int]:
    """One online-probe update: on the clean images when given, else on both global views' features
    (each with its label). Returns (correct, labelled)."""
    assert parts.probe is not None
    if clean is not None:
        keep = labels >= 0  # encode only what the probe can learn from
        return parts.probe.step(clean_features(parts, clean[keep]), labels[keep])
    reps = view_features.shape[0] // labels.shape[0]
    return parts.probe.step(view_features, labels.repeat(reps))


def augment(parts: TrainParts, views: Sequence[Tensor], epoch: int, micro: int, rank: int) -> list[Tensor]:
    """uint8 crops on the device -> float views in [0, 1], each view with its own seed."""
    out = []
    for v, x in enumerate(views):
        x = parts.photometric[min(v, len(parts.photometric) - 1)](x, seed=augment_seed(
            parts.cfg.train.seed, epoch, micro, rank, v))
        out.append(x.contiguous(memory_format=torch.channels_last) if parts.cfg.train.channels_last else x)
    return out


def clip_per_parameter_(params: Sequence[nn.Parameter], max_norm: float) -> None:
    """Scale every parameter's gradient to norm at most ``max_norm`` (DINO clips per tensor)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    scale = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scale)


#: a named phase of the step, seen by ``torch.profiler`` (the step profile in ``benchmarks/``);
#: next to free when no profiler runs
phase = torch.profiler.record_function


def train_step(parts: TrainParts, views: Sequence[Tensor], labels: Tensor | None, epoch: int, micro: int,
               global_step: int, rank: int = 0, clean: Tensor | None = None) -> StepResult:
    """One micro-step on a batch of uint8 crops already on the device (``views[:2]`` global).

    The online probe trains on ``clean`` (uint8 images resized as the evaluation does) when given,
    else on the features of both global views.

    ``micro`` counts micro-steps within the epoch (augmentation seeds); ``global_step`` counts
    optimizer steps (schedules). Raises :class:`NonFiniteLossError` on a NaN/inf loss.
    """
    cfg, sched = parts.cfg, parts.schedule
    with phase("augment"):
        x = augment(parts, views, epoch, micro, rank)
    sync = (micro + 1) % cfg.train.accum_steps == 0
    no_sync = parts.model.no_sync() if (isinstance(parts.model, nn.parallel.DistributedDataParallel)
                                        and not sync) else nullcontext()
    with no_sync:
        with parts.rt.autocast(), phase("forward"):
            out = parts.forward(x, sched.epoch(global_step))
        loss = out.loss.float()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch + 1}, step {global_step}")
        with phase("backward"):
            (loss / cfg.train.accum_steps).backward()
    for p in out.drop_grads:
        p.grad = None

    result = StepResult()
    if parts.probe is not None and labels is not None:
        with phase("online probe"):
            result.probe_correct, result.probe_total = probe_step(parts, out.features, labels, clean)
    if not sync:
        return result

    lr, tau = sched.lr(global_step), sched.ema(global_step)
    with phase("optimizer"):
        if cfg.optim.clip_grad > 0:
            clip_per_parameter_([p for g in parts.optimizer.param_groups for p in g["params"]], cfg.optim.clip_grad)
        set_lr(parts.optimizer, lr)
        parts.optimizer.step()
        parts.optimizer.zero_grad(set_to_none=True)
    pairs = parts.method.momentum_pairs()
    if pairs:
        with phase("ema"):
            ema_update_(pairs, tau)
    z = F.normalize(out.embeddings.float(), dim=1)
    result.values = {"loss": loss.item(), "loss_global": out.loss_global.item(), "loss_local": out.loss_local.item(),
                     "lr": lr, **({"tau": tau} if pairs else {}),  # no EMA momentum without momentum targets
                     **{k: v.item() for k, v in out.metrics.items()},
                     # collapse monitor: std of normalised embeddings x sqrt(D); ~1 healthy, 0 collapsed
                     "embedding_std": (z.std(0).mean() * math.sqrt(z.shape[1])).item()}
    return result
