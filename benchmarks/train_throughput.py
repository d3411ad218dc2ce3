"""Training throughput: images/s of the methods' full training step (the trainer's ``train_step``),
CO/base step-time ratios, peak memory and the data loader's throughput, with the same settings
for every method (docs/benchmarks.md). ``cossl-train bench`` or ``python -m benchmarks.train_throughput``."""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from cossl_train.augment import TwoViewCrop
from cossl_train.config import Config, apply_overrides, load_config
from cossl_train.data import PretrainDataset, build_loader, build_pretrain_dataset
from cossl_train.methods import method_names
from cossl_train.optim import effective_lr
from cossl_train.runtime import Runtime, cpu_native_bf16, resolve_runtime
from cossl_train.step import Schedule, build_parts, train_step

from .machine import Peak, cpu_peak

METHODS: tuple[str, ...] = tuple(method_names())
#: methods timed by default (the others on request: --methods all)
DEFAULT_METHODS: tuple[str, ...] = ("byol", "co_byol", "simclr", "co_simclr")
#: distinct loader batches kept on the device and cycled through by the timed steps
INPUT_BATCHES = 4


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


class SyntheticImages(Dataset):
    """``n`` random uint8 images (3, size, size) with labels ``i % 10``, for benchmarks without data.

    A fixed pool of ``pool`` images is drawn once (seeded) and indexed modulo its size, so that
    drawing random numbers is not part of what the loader benchmark measures and memory stays
    small whatever ``n``.
    """

    def __init__(self, n: int, size: int, pool: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n = int(n)
        self.images = torch.randint(0, 256, (min(pool, n), 3, size, size), dtype=torch.uint8, generator=g)
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i % len(self.images)], i % 10


def synthetic_source_size(resolution: int) -> int:
    """Side of the synthetic source images: resolution x 8/7 (256 for 224, the usual resized
    ImageNet side), so RandomResizedCrop resamples as it would on real photos."""
    return max(resolution, int(round(resolution * 8 / 7)))


def build_dataset(cfg: Config, dataset: str | None, n: int) -> PretrainDataset:
    """The pre-training dataset of the benchmark: the config's (the embedded digits at the
    resolution without --config), or ``n`` synthetic images cut per image, as files are, behind
    the training pipeline's ``TwoViewCrop``."""
    if dataset in (None, "digits"):
        return build_pretrain_dataset(cfg.data, cfg.augment)
    if dataset == "synthetic":
        base = SyntheticImages(n, synthetic_source_size(cfg.augment.resolution))
        return PretrainDataset(base, TwoViewCrop(cfg.augment))
    raise ValueError(f"--dataset must be digits or synthetic, got {dataset!r}")


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vm_hwm_mib() -> float | None:
    """Linux's peak RSS of this process's address space (``VmHWM``), or None without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_rss_mib() -> tuple[float, str]:
    """Peak resident set size of this process, and where it was read.

    ``getrusage``'s ``ru_maxrss`` is the maximum of the process's own peak (Linux ``VmHWM``, which
    ``/proc/self/clear_refs`` resets) and a value inherited at ``exec``: the RSS of the parent at
    fork time. In a child spawned by a big benchmark process that inherited value hides the
    child's own peak, so on Linux ``VmHWM`` is read directly; elsewhere ``ru_maxrss`` is used
    (KiB on Linux, bytes on macOS).
    """
    hwm = _vm_hwm_mib()
    if hwm is not None:
        return hwm, "VmHWM (/proc/self/status)"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 2**20 if sys.platform == "darwin" else peak / 2**10), "getrusage ru_maxrss"


def _release_free_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``), so that memory a
    previous method freed but the allocator kept resident does not hide the next method's growth
    from the RSS measure. A no-op where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


class PeakMemory:
    """Peak memory of the block between ``reset()`` and ``read()``: CUDA allocator or CPU RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = ""
        self.baseline = float("nan")

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "CUDA max_memory_allocated, reset before each method"
        else:
            _release_free_heap()
            self.baseline = _current_rss_mib()
            reset = _reset_peak_rss()
            source = _peak_rss_mib()[1]
            self.kind = (f"CPU peak RSS ({source}), reset before each method" if reset
                         else f"CPU peak RSS since the process started ({source}; no reset allowed)")

    def read(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return _peak_rss_mib()[0]


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fetch_inputs(ds: Dataset, cfg: Config, rt: Runtime, n: int = INPUT_BATCHES) -> list[tuple[Tensor, Tensor]]:
    """``n`` loader batches of uint8 crops, moved to the device once (the model timing then
    excludes the loader, which is timed separately)."""
    loader = build_loader(ds, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, epoch=0, num_workers=0,
                          drop_last=True, device=rt.device)
    out = []
    for i, batch in enumerate(loader):
        if i == n:
            break
        out.append((batch.view1.to(rt.device), batch.view2.to(rt.device)))
    if not out:
        raise ValueError(f"batch size {cfg.train.batch_size} is larger than the dataset ({len(ds)} images)")
    return out


class StepRunner:
    """One method ready to train: ``step(i)`` runs training step ``i`` (``step.train_step``, the
    trainer's own step, without an online probe) on inputs already on the device and returns its
    duration; ``loop_step(i)`` runs it as the trainer's loop does, on the next batch of a loader
    of ``ds`` (built per epoch, ``data.num_workers`` processes for files), the wait for the batch
    and the copy to the device included."""

    def __init__(self, cfg: Config, rt: Runtime, inputs: Sequence[tuple[Tensor, Tensor]], total_steps: int,
                 ds: Dataset | None = None) -> None:
        self.cfg, self.rt, self.inputs, self.ds = cfg, rt, inputs, ds
        schedule = Schedule(steps_per_epoch=total_steps, total_steps=total_steps, warmup_steps=0,
                            peak_lr=effective_lr(cfg.optim, cfg.train.batch_size), min_lr_ratio=cfg.optim.min_lr_ratio,
                            ema_base=cfg.method.ema_base)
        self.parts = build_parts(cfg, rt, schedule, num_classes=None)
        self.method = self.parts.method
        self._batches: Any = None
        self._epoch = 0

    def step(self, i: int) -> float:
        _sync(self.rt.device)
        t0 = time.perf_counter()
        train_step(self.parts, self.inputs[i % len(self.inputs)], None, epoch=0, micro=i, global_step=i)
        _sync(self.rt.device)
        return time.perf_counter() - t0

    def _next_batch(self) -> Any:
        for _ in range(2):
            if self._batches is None:
                self._batches = iter(build_loader(self.ds, self.cfg.train.batch_size, shuffle=True,
                                                  seed=self.cfg.train.seed, epoch=self._epoch,
                                                  num_workers=self.cfg.data.num_workers, drop_last=True,
                                                  device=self.rt.device))
                self._epoch += 1
            batch = next(self._batches, None)
            if batch is not None:
                return batch
            self._batches = None
        raise ValueError(f"batch size {self.cfg.train.batch_size} is larger than the dataset")

    def loop_step(self, i: int) -> float:
        _sync(self.rt.device)
        t0 = time.perf_counter()
        batch = self._next_batch()
        views = [v.to(self.rt.device, non_blocking=True) for v in (batch.view1, batch.view2, *batch.local_views)]
        train_step(self.parts, views, None, epoch=0, micro=i, global_step=i)
        _sync(self.rt.device)
        return time.perf_counter() - t0

    def count_flops(self, i: int) -> float:
        """FLOP of training step ``i`` (``torch.utils.flop_counter.FlopCounterMode``: forward and
        backward of every matrix product and convolution; element-wise work is not counted)."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        compiled, self.parts.forward = self.parts.forward, self.parts.model  # the counter sees eager ops only
        try:
            with counter:
                train_step(self.parts, self.inputs[i % len(self.inputs)], None, epoch=0, micro=i, global_step=i)
        finally:
            self.parts.forward = compiled
        return float(counter.get_total_flops())


def cpu_memory_probe(cfg: Config, rt: Runtime, inputs: Sequence[tuple[Tensor, Tensor]], warmup: int,
                     threads: int) -> dict[str, Any]:
    """Peak RSS of one method's build and ``warmup`` steps, meant to run in a fresh process.

    In one long-lived process the RSS measure is unfair to the methods measured later: memory
    that earlier ones freed stays resident in the allocator and one-time costs (oneDNN kernels,
    kornia) are paid by the first. A fresh process per method pays the same start-up for each.
    """
    torch.set_num_threads(threads)
    memory = PeakMemory(rt.device)
    memory.reset()
    runner = StepRunner(cfg, rt, inputs, warmup)
    for i in range(warmup):
        runner.step(i)
    peak = memory.read()
    return {"peak_memory_mib": peak - memory.baseline, "peak_memory_absolute_mib": peak,
            "memory_before_mib": memory.baseline, "memory_kind": memory.kind + ", one fresh process per method"}


def _split(steps: int, rounds: int) -> list[int]:
    """``steps`` as ``rounds`` near-equal positive parts."""
    rounds = max(1, min(rounds, steps))
    return [steps // rounds + (1 if k < steps % rounds else 0) for k in range(rounds)]


def _warm_up(runner: StepRunner, warmup: int, memory: PeakMemory, bar: tqdm) -> dict[str, Any]:
    """``warmup`` untimed steps, one more counting its FLOPs and one of the trainer's loop (when
    timed); the first step's time, the FLOP per step, peak memory over build and warm-up, sizes."""
    first = float("nan")
    for i in range(warmup):
        dt = runner.step(i)
        first = dt if i == 0 else first
        bar.update(1)
    flops = runner.count_flops(warmup)  # one more untimed step, under the FLOP counter
    if runner.ds is not None:  # the first loader (and its workers) of the trainer's loop, untimed
        runner.loop_step(warmup + 1)
    peak = memory.read()
    return {"first_step_s": first, "flop_per_step": flops, "peak_memory_mib": peak - memory.baseline,
            "peak_memory_absolute_mib": peak, "memory_before_mib": memory.baseline, "memory_kind": memory.kind,
            "encoder_params": sum(p.numel() for p in runner.method.encoder.parameters()),
            "params": sum(p.numel() for p in runner.method.parameters())}


def _timed_rounds(runners: dict[str, StepRunner], start: int, steps: int, rounds: int, bar: tqdm,
                  loop_steps: int = 0) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Step times of every runner, ``steps`` each, in ``rounds`` rounds of rotated order, and in
    the same rounds ``loop_steps`` steps of the trainer's loop (loader included) each."""
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    loops: dict[str, list[float]] = {n: [] for n in names}
    i = start + 2  # after the FLOP-counting step and the loop's warm-up step
    shares = _split(steps, rounds)
    loop_shares = [loop_steps // len(shares) + (k < loop_steps % len(shares)) for k in range(len(shares))]
    for k, (share, loop_share) in enumerate(zip(shares, loop_shares, strict=True)):
        for name in names[k % len(names):] + names[:k % len(names)]:
            for j in range(share):
                times[name].append(runners[name].step(i + j))
                bar.update(1)
            for j in range(loop_share):
                loops[name].append(runners[name].loop_step(i + share + j))
                bar.update(1)
        i += share + loop_share
    return times, loops


def _step_statistics(ts: list[float], batch: int) -> dict[str, float]:
    ts = sorted(ts)
    median = statistics.median(ts)
    return {"images_per_s": batch / median, "images_per_s_mean": batch * len(ts) / sum(ts),
            "step_ms_median": median * 1e3, "step_ms_mean": statistics.fmean(ts) * 1e3,
            "step_ms_p90": ts[min(len(ts) - 1, int(math.ceil(0.9 * len(ts))) - 1)] * 1e3}


def _loop_statistics(loop: list[float], steps: list[float], batch: int) -> dict[str, float]:
    """The loop's images/s (mean over its steps: a loader stall counts) and its ratio to the step's
    mean images/s measured in the same rounds."""
    if not loop:
        return {}
    loop_ips, step_ips = batch * len(loop) / sum(loop), batch * len(steps) / sum(steps)
    return {"loop_images_per_s": loop_ips, "loop_step_ms_mean": statistics.fmean(loop) * 1e3,
            "loop_steps": len(loop), "loop_over_step": loop_ips / step_ips}


def _fresh_process_memory(cfgs: dict[str, Config], rts: dict[str, Runtime], inputs: Sequence[tuple[Tensor, Tensor]],
                          warmup: int, progress: bool) -> dict[str, dict[str, Any]]:
    """:func:`cpu_memory_probe` of every method, each in a fresh process."""
    import importlib
    import multiprocessing as mp

    # spawn, not fork: a fresh interpreter, with none of this process's allocations resident;
    # the probe is looked up by module name so that it also resolves under ``python -m``
    probe = importlib.import_module("benchmarks.train_throughput").cpu_memory_probe
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return {name: pool.apply(probe, (cfgs[name], rts[name], list(inputs), warmup, torch.get_num_threads()))
                for name in tqdm(cfgs, desc="memory", leave=False, disable=not progress)}


def time_methods(cfgs: dict[str, Config], inputs: Sequence[tuple[Tensor, Tensor]], steps: int,
                 warmup: int, rounds: int = 4, progress: bool = True,
                 isolate_cpu_memory: bool = True, ds: Dataset | None = None,
                 loop_steps: int = 0) -> dict[str, dict[str, Any]]:
    """Time ``steps`` training steps of every method after ``warmup`` untimed ones each.

    Methods are built and warmed up one after the other; peak memory is read over each one's
    build and warm-up (optimizer state and autotuning included) and reported above what was in use
    before it was built. On the CPU (with ``isolate_cpu_memory``) that reading is then replaced by
    one taken in a fresh process per method (:func:`cpu_memory_probe`).

    The timed steps then run in ``rounds`` rounds, each method taking its share of steps in every
    round, in an order rotated from round to round: a burst of load from another user of a shared
    machine then falls on all methods alike instead of on one of them, which keeps the CO/base
    ratios meaningful. With a dataset ``ds`` and ``loop_steps``, every round also runs the trainer's
    loop (:meth:`StepRunner.loop_step`) for each method: its speed beside the step's.
    """
    names = list(cfgs)
    loop_steps = loop_steps if ds is not None else 0
    bar = tqdm(total=(warmup + steps + loop_steps) * len(names), desc="bench", unit="step", leave=False,
               disable=not progress)
    rts = {name: resolve_runtime(cfg.train.device, cfg.train.precision) for name, cfg in cfgs.items()}
    memory = PeakMemory(rts[names[0]].device)
    runners: dict[str, StepRunner] = {}
    warm: dict[str, dict[str, Any]] = {}
    for name in names:
        memory.reset()
        runners[name] = StepRunner(cfgs[name], rts[name], inputs, warmup + steps + loop_steps + 2,
                                   ds if loop_steps else None)
        warm[name] = _warm_up(runners[name], warmup, memory, bar)
    times, loops = _timed_rounds(runners, warmup, steps, rounds, bar, loop_steps)
    bar.close()
    results = {name: {**_step_statistics(times[name], cfgs[name].train.batch_size),
                      **_loop_statistics(loops[name], times[name], cfgs[name].train.batch_size), **warm[name]}
               for name in names}
    for r in results.values():
        r["gflops_achieved"] = r["flop_per_step"] / 1e9 / (r["step_ms_median"] / 1e3)
    del runners
    gc.collect()
    if memory.device.type == "cuda":
        torch.cuda.empty_cache()
    elif isolate_cpu_memory:
        for name, mem in _fresh_process_memory(cfgs, rts, inputs, warmup, progress).items():
            results[name].update(mem)
    return results


def time_loader(ds: Dataset, cfg: Config, rt: Runtime, workers: int, batches: int, warmup: int = 2) -> dict[str, Any]:
    """Images/s of the data loader alone (sampler + dataset + TwoViewCrop + collate), ``workers``
    worker processes, over ``batches`` batches after ``warmup`` (worker start-up). Like the
    trainer, a new loader is built for every epoch, so a small dataset pays worker start-up again
    at each pass."""
    bs = cfg.train.batch_size
    per_epoch = len(ds) // bs  # type: ignore[arg-type]
    if per_epoch < 1:
        raise ValueError(f"batch size {bs} is larger than the dataset ({len(ds)} images)")  # type: ignore[arg-type]
    seen, timed, t0 = 0, 0, 0.0
    epoch = 0
    while timed < batches:
        loader = build_loader(ds, bs, shuffle=True, seed=cfg.train.seed, epoch=epoch, num_workers=workers,
                              drop_last=True, device=rt.device)
        for batch in loader:
            if seen == warmup:
                t0 = time.perf_counter()
            elif seen > warmup:
                timed += 1
                if timed == batches:
                    break
            seen += 1
            del batch
        epoch += 1
    elapsed = time.perf_counter() - t0
    # the batch that started the clock is not counted: ``batches`` batches arrived after it
    batched = bool(getattr(ds, "batchable", False))
    return {"images_per_s": batches * bs / elapsed, "batches": batches, "workers": 0 if batched else workers,
            "epochs": epoch, "batched": batched}


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cossl-train bench",
        description="Training throughput of byol, co_byol, simclr and co_simclr (same backbone, input and batch), "
                    "CO/base step-time ratio, peak memory, and data-loader throughput.",
        epilog="GPU: cossl-train bench --device cuda --backbone resnet50 --width 64 --no-small-image "
               "--resolution 224 --batch-size 128 --precision bf16 --channels-last --dataset synthetic --workers 8",
    )
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, or 'all' ({', '.join(METHODS)}; default: {','.join(DEFAULT_METHODS)})")
    p.add_argument("--config", metavar="YAML",
                   help="start from this config (e.g. cossl_train/configs/demo.yaml: the demo's settings); the "
                        "flags below then change only what they are given for")
    p.add_argument("--backbone", help=f"a name from `cossl-train backbones` (default: {FLAG_DEFAULTS['backbone']})")
    p.add_argument("--width", type=int, help=f"backbone base width (default: {FLAG_DEFAULTS['width']}; 64 = standard)")
    p.add_argument("--small-image", action=argparse.BooleanOptionalAction,
                   help="small-image stem (default: on; --no-small-image for the ImageNet stem)")
    p.add_argument("--resolution", type=int, help=f"crop side in pixels (default: {FLAG_DEFAULTS['resolution']})")
    p.add_argument("--batch-size", type=int, help=f"per step (default: {FLAG_DEFAULTS['batch_size']})")
    p.add_argument("--steps", type=int, default=20, help="timed steps per method (default: 20)")
    p.add_argument("--loop-steps", type=int,
                   help="timed steps of the trainer's loop (loader included) per method (default: as --steps; "
                        "0: none)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per method before them (default: 3)")
    p.add_argument("--rounds", type=int, default=4,
                   help="timed steps are interleaved across methods in this many rounds (default: 4)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "both"),
                   help="auto (default): bf16 on CUDA and on CPUs with native bf16, else fp32; both: time every "
                        "method in fp32 and in bf16 in the same run")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="default: off")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile the model (compile time is in warm-up; default: off)")
    p.add_argument("--optim", choices=("lars", "sgd", "adamw"), help=f"default: {FLAG_DEFAULTS['optim']}")
    p.add_argument("--workers", type=int,
                   help=f"DataLoader workers for images read from files (default: {FLAG_DEFAULTS['workers']}; images "
                        "held in memory are cut a batch at a time without workers)")
    p.add_argument("--loader-batches", type=int, default=20, help="batches timed for the loader (default: 20)")
    p.add_argument("--dataset", choices=("digits", "synthetic"),
                   help="digits (embedded) or synthetic random uint8 images, read per image like files (default: "
                        "digits, or the config's data with --config)")
    p.add_argument("--cores", type=int, help="cores of the peak FLOP/s (default: torch's threads)")
    p.add_argument("--clock-ghz", type=float, help="clock of the peak FLOP/s (default: /proc/cpuinfo's cpu MHz)")
    p.add_argument("--fp32-flop-per-cycle", type=int,
                   help="fp32 FLOP per cycle and core (default: from torch's CPU capability; docs/benchmarks.md)")
    p.add_argument("--bf16-flop-per-cycle", type=int, help="bf16 FLOP per cycle and core (default: likewise)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--memory", choices=("fresh", "inline"), default="fresh",
                   help="CPU peak memory read in a fresh process per method (fresh, default: fair to every "
                        "method, a few seconds each) or in this process as methods are built (inline)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides, e.g. co.proj_hidden=512")
    return p


#: the benchmark's settings when no --config is given (a CPU proxy of about a minute)
FLAG_DEFAULTS: dict[str, Any] = {"backbone": "resnet18", "width": 16, "small_image": True, "resolution": 32,
                                 "batch_size": 64, "device": "auto", "channels_last": False, "compile": False,
                                 "optim": "lars", "workers": 2, "dataset": "digits"}
_FLAG_KEYS = {"backbone": "backbone.name", "width": "backbone.width", "small_image": "backbone.small_image",
              "resolution": "augment.resolution", "batch_size": "train.batch_size", "device": "train.device",
              "channels_last": "train.channels_last", "compile": "train.compile", "optim": "optim.name",
              "workers": "data.num_workers"}


def _value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def bench_config(args: argparse.Namespace, precision: str) -> Config:
    """The benchmark's config: ``--config`` (or the defaults with :data:`FLAG_DEFAULTS`), the flags
    given, then the trailing overrides. Without --config the data are the embedded digits at the
    crop's side."""
    given = {k: getattr(args, k) for k in _FLAG_KEYS if getattr(args, k) is not None}
    flags = {**({} if args.config else {k: FLAG_DEFAULTS[k] for k in _FLAG_KEYS}), **given}
    overrides = [f"{_FLAG_KEYS[k]}={_value(v)}" for k, v in flags.items()] + [f"train.precision={precision}"]
    if not args.config or args.dataset == "digits":
        side = load_config(args.config, [*overrides, *args.overrides]).augment.resolution
        overrides += ["data.dataset=digits", f"data.digits_size={side}"]
    return load_config(args.config, [*overrides, *args.overrides])


def _load_average() -> float:
    """1-minute load average: how busy a shared machine was (NaN where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _key(method: str, precision: str, both: bool) -> str:
    return f"{method}@{precision}" if both else method


def _split_key(key: str) -> tuple[str, str]:
    method, _, precision = key.partition("@")
    return method, precision


def step_ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Median step-time ratios measured in this run: each CO method over its base method (same
    precision), and bf16 over fp32 for each method timed in both."""
    ratios = {}
    for key in results:
        method, precision = _split_key(key)
        others = [f"{method[3:]}@{precision}" if precision else method[3:]] if method.startswith("co_") else []
        others += [f"{method}@fp32"] if precision == "bf16" else []
        for other in others:
            if other in results:
                ratios[f"{key}/{other}"] = results[key]["step_ms_median"] / results[other]["step_ms_median"]
    return ratios


def format_table(results: dict[str, dict[str, Any]], ratios: dict[str, float], peak: Peak | None = None) -> str:
    """One row per method: the step (images/s, median ms, against its base), the trainer's loop
    (images/s and its share of the step's), FLOP per step, achieved GFLOP/s and share of the peaks."""
    head = (f"{'method':<16}{'img/s':>8}{'step ms':>9}{'vs base':>8}{'loop img/s':>11}{'loop/step':>10}"
            f"{'GFLOP/step':>11}{'GFLOP/s':>9}{'% fp32 pk':>10}{'% bf16 pk':>10}{'peak MiB':>9}{'1st step s':>11}")
    lines = [head]
    for name, r in results.items():
        method, precision = _split_key(name)
        base = f"{method[3:]}@{precision}" if precision else method[3:]
        ratio = ratios.get(f"{name}/{base}")
        loop, share = r.get("loop_images_per_s"), r.get("loop_over_step", 0.0)
        gf = r["gflops_achieved"]
        lines.append(
            f"{name:<16}{r['images_per_s']:>8.1f}{r['step_ms_median']:>9.1f}{(f'{ratio:.2f}x' if ratio else ''):>8}"
            f"{(f'{loop:.1f}' if loop else '-'):>11}{(f'{share:.0%}' if loop else '-'):>10}"
            f"{r['flop_per_step'] / 1e9:>11.2f}{gf:>9.1f}"
            f"{(f'{gf / peak.fp32:.0%}' if peak else '-'):>10}{(f'{gf / peak.bf16:.0%}' if peak else '-'):>10}"
            f"{r['peak_memory_mib']:>9.0f}{r['first_step_s']:>11.2f}")
    return "\n".join(lines)


def _parse_methods(spec: str) -> list[str] | None:
    methods = list(METHODS) if spec == "all" else [m.strip() for m in spec.split(",") if m.strip()]
    return methods if methods and all(m in METHODS for m in methods) else None


def _settings(args: argparse.Namespace, cfg: Config, rt: Runtime, precisions: list[str]) -> dict[str, Any]:
    return {
        "backbone": cfg.backbone.name, "width": cfg.backbone.width, "small_image": cfg.backbone.small_image,
        "resolution": cfg.augment.resolution, "batch_size": cfg.train.batch_size, "steps": args.steps,
        "warmup": args.warmup, "rounds": len(_split(args.steps, args.rounds)),
        "device": str(rt.device), "device_name": _device_name(rt.device), "precision": ",".join(precisions),
        "precision_reason": rt.precision_reason, "cpu_flags_bf16": cpu_native_bf16()[1],
        "channels_last": cfg.train.channels_last, "compile": cfg.train.compile,
        "optim": cfg.optim.name, "dataset": args.dataset or cfg.data.dataset, "workers": cfg.data.num_workers,
        "config": args.config,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "overrides": list(args.overrides),
        "load_average_before": _load_average(), "loop_steps": args.loop_steps,
    }


def _print_header(st: dict[str, Any], args: argparse.Namespace) -> None:
    config = f" --config {st['config']}" if st["config"] else ""
    print(f"cossl-train bench{config}: {st['backbone']} width {st['width']}"
          f"{' small-image' if st['small_image'] else ''}, {st['resolution']} px, batch "
          f"{st['batch_size']}, {st['device']} ({st['device_name']}) {st['precision']} ({st['precision_reason']}; "
          f"{st['cpu_flags_bf16']}), channels_last {'on' if st['channels_last'] else 'off'}, compile "
          f"{'on' if st['compile'] else 'off'}, {st['threads']} threads; median of {args.steps} steps after "
          f"{args.warmup} warm-up, interleaved in {st['rounds']} rounds with {st['loop_steps']} steps of the "
          "trainer's loop", flush=True)


def _report(results: dict[str, dict[str, Any]], ratios: dict[str, float], loader: dict[str, Any],
            cfg: Config, st: dict[str, Any], peak: Peak | None) -> None:
    print(format_table(results, ratios, peak))
    if ratios:
        print("step-time ratios (same run): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    how = ("a batch at a time in this process" if loader["batched"]
           else f"per image by {loader['workers']} worker process(es)")
    print("loop: the trainer's loop (loader, copy to the device, step), mean images/s over its steps; loop/step: "
          "against the step's mean images/s in the same rounds. GFLOP/step: FlopCounterMode, forward + backward "
          "(convolutions and matrix products); GFLOP/s at the median step")
    if peak is not None:
        print(f"peak: {peak.describe()}")
    print(f"data loader alone ({st['dataset']}, crops at {cfg.augment.resolution} px, {how}): "
          f"{loader['images_per_s']:.0f} img/s")
    print(f"peak MiB: {next(iter(results.values()))['memory_kind']}; above the level before the method "
          "was built (absolute values in the JSON)")
    st["load_average_after"] = _load_average()
    if st["device"] == "cpu":
        print("note: CPU timings; on a shared machine they are noisy (medians reduce, not remove, the noise)")
        print(f"load average (1 min) before/after: {st['load_average_before']:.1f} / "
              f"{st['load_average_after']:.1f} on {os.cpu_count()} CPUs")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    methods = _parse_methods(args.methods)
    if methods is None:
        print(f"cossl-train bench: error: --methods must be 'all' or name some of {', '.join(METHODS)}",
              file=sys.stderr)
        return 2
    if args.loop_steps is None:
        args.loop_steps = args.steps
    if args.steps < 1 or args.warmup < 1 or args.rounds < 1 or args.loop_steps < 0:
        # warm-up >= 1: peak memory is read over the warm-up (the first step allocates optimizer state)
        print("cossl-train bench: error: need --steps >= 1, --warmup >= 1, --rounds >= 1 and --loop-steps >= 0",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    both = args.precision == "both"
    cfg = bench_config(args, "fp32" if both else args.precision)
    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    precisions = ["fp32", "bf16"] if both else [rt.precision]
    st = _settings(args, cfg, rt, precisions)
    _print_header(st, args)

    n_synthetic = max(cfg.train.batch_size * (args.loader_batches + 4), cfg.train.batch_size * INPUT_BATCHES)
    ds = build_dataset(cfg, args.dataset, n_synthetic)
    inputs = fetch_inputs(ds, cfg, rt)
    cfgs = {_key(m, p, both): apply_overrides(cfg, [f"method.name={m}", f"train.precision={p}"])
            for p in precisions for m in methods}
    results = time_methods(cfgs, inputs, args.steps, args.warmup, rounds=args.rounds, progress=not args.no_progress,
                           ds=ds, loop_steps=st["loop_steps"], isolate_cpu_memory=args.memory == "fresh")
    ratios = step_ratios(results)
    del inputs
    loader = time_loader(ds, cfg, rt, cfg.data.num_workers, args.loader_batches)
    peak = cpu_peak(args.cores, args.clock_ghz, args.fp32_flop_per_cycle,
                    args.bf16_flop_per_cycle) if rt.device.type == "cpu" else None
    _report(results, ratios, loader, cfg, st, peak)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"settings": st, "methods": results, "ratios": ratios, "loader": loader,
                                    "peak": peak.to_dict() if peak else None}, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
