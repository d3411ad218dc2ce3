"""Where a training run's time goes: the phases of the trainer's own step (augmentation, forward,
the CO term, backward, online probe, optimizer, EMA), the wait for the data loader, and the offline
evaluation (kNN + linear probe) of the encoder, for a config and a few methods
(docs/benchmarks.md). ``python -m benchmarks.profile_step --config cossl_train/configs/demo.yaml``."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from cossl_train.config import Config, apply_overrides, load_config
from cossl_train.data import build_loader
from cossl_train.runtime import resolve_runtime
from cossl_train.step import build_parts, train_step
from cossl_train.trainer import make_schedule, setup_data

#: the named phases of ``step.train_step`` and ``SSLMethod.forward`` (``co_term`` is inside ``forward``)
PHASES = ("augment", "forward", "co_term", "backward", "online probe", "optimizer", "ema")


def profile_method(cfg: Config, steps: int, warmup: int, top_ops: int = 12) -> dict[str, Any]:
    """Milliseconds per optimizer step and images/s over ``steps`` steps after ``warmup`` untimed
    ones, in the trainer's own order (loader -> device -> step), without the profiler; then the same
    number of steps under ``torch.profiler``: milliseconds per step in each phase and the ``top_ops``
    operators with the most self time (their share of all self time). The profiler slows small
    operators most, so its milliseconds add up to more than the step's; read them as shares."""
    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    data = setup_data(cfg, 1)
    parts = build_parts(cfg, rt, make_schedule(cfg, data), data.num_classes)
    parts.method.train()
    loader = None
    waits, totals = [], []

    def one(micro: int) -> None:
        nonlocal loader
        t0 = time.perf_counter()
        batch = next(loader, None) if loader is not None else None
        if batch is None:  # a new loader per epoch, as the trainer builds them
            loader = iter(build_loader(data.dataset, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                                       epoch=micro // data.steps_per_epoch, num_workers=cfg.data.num_workers,
                                       drop_last=True, device=rt.device))
            batch = next(loader)
        t1 = time.perf_counter()
        views = [v.to(rt.device) for v in (batch.view1, batch.view2, *batch.local_views)]
        clean = batch.clean.to(rt.device) if batch.clean is not None else None
        train_step(parts, views, batch.label.to(rt.device), 0, micro, micro, 0, clean)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        waits.append(t1 - t0)
        totals.append(time.perf_counter() - t0)

    for i in range(warmup):
        one(i)
    waits.clear()
    totals.clear()
    for i in range(warmup, warmup + steps):
        one(i)
    step_ms, wait_ms = 1e3 * statistics.fmean(totals), 1e3 * statistics.fmean(waits)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(warmup + steps, warmup + 2 * steps):
            one(i)
    averages = prof.key_averages()
    events = {e.key: e.cpu_time_total / 1e3 / steps for e in averages if e.key in PHASES}
    ops = sorted((e for e in averages if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    all_self = sum(e.self_cpu_time_total for e in averages) or 1.0
    return {"phases_ms": {p: events.get(p, 0.0) for p in PHASES}, "loader_wait_ms": wait_ms,
            "step_ms": step_ms, "images_per_s": cfg.train.batch_size / (step_ms / 1e3), "precision": rt.precision,
            "top_ops": [(e.key, e.self_cpu_time_total / all_self, e.count // steps) for e in ops[:top_ops]]}


def time_evaluation(cfg: Config) -> dict[str, float]:
    """Seconds of the offline evaluation of an encoder (features of both splits, kNN, linear probe)."""
    from cossl_train.evaluate import evaluate_encoder
    from cossl_train.methods import build_encoder

    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    t0 = time.perf_counter()
    evaluate_encoder(build_encoder(cfg).to(rt.device), cfg, device=rt.device, progress=False)
    return {"evaluation_s": time.perf_counter() - t0}


def format_profile(results: dict[str, dict[str, Any]]) -> str:
    cols = ["step", "loader wait", *(f"{p} (profiled)" for p in PHASES)]
    lines = ["| method | img/s | " + " | ".join(f"{c} (ms)" for c in cols) + " |",
             "|---|" + "---:|" * (len(cols) + 1)]
    for name, r in results.items():
        cells = [r["step_ms"], r["loader_wait_ms"], *(r["phases_ms"][p] for p in PHASES)]
        lines.append(f"| {name} | {r['images_per_s']:.0f} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def format_ops(results: dict[str, dict[str, Any]]) -> str:
    """The operators with the most self time under the profiler, per method."""
    lines = []
    for name, r in results.items():
        lines.append(f"{name}: " + ", ".join(f"{op.removeprefix('aten::')} {share:.0%} ({calls}/step)"
                                             for op, share, calls in r["top_ops"]))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cossl_train/configs/demo.yaml")
    p.add_argument("--methods", default="simclr,co_simclr")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-eval", action="store_true", help="skip timing the offline evaluation")
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    base = load_config(args.config, args.overrides)
    results = {m: profile_method(apply_overrides(base, [f"method.name={m}"]), args.steps, args.warmup)
               for m in args.methods.split(",")}
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, precision {next(iter(results.values()))['precision']}, batch {base.train.batch_size}, "
          f"{base.augment.resolution} px, {base.backbone.name} width {base.backbone.width}; "
          f"{args.steps} steps after {args.warmup}; ms per optimizer step, the step without the profiler, its "
          "phases under it (co_term is part of forward):\n")
    print(format_profile(results))
    print("\nOperators with the most self time under the profiler (share of all self time):")
    print(format_ops(results))
    out: dict[str, Any] = {"methods": results, "overrides": args.overrides, "config": args.config}
    if not args.no_eval:
        out.update(time_evaluation(base))
        print(f"\noffline evaluation of one encoder (features, kNN, linear probe): {out['evaluation_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
