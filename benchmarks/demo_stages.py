"""Where the demo's time goes: ``cossl-train demo`` run in this process with each stage timed
(start-up, the random-init evaluations, each run's pre-training and evaluation, the report), the
FLOP of its training (FLOP per step x steps), and from them an estimate for another machine:
training FLOP / that machine's achieved GFLOP/s per method, plus its other stages (docs/benchmarks.md,
"The demo's stages"). ``python -m benchmarks.demo_stages --out /tmp/demo_stages [overrides]``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cossl_train.config import Config, apply_overrides
from cossl_train.data import build_loader
from cossl_train.experiments.compare import RANDOM
from cossl_train.experiments.demo import METHODS, SEEDS, demo_config, run_demo
from cossl_train.runtime import resolve_runtime
from cossl_train.step import build_parts, train_step
from cossl_train.trainer import make_schedule, setup_data

#: achieved GFLOP/s of the eager training step on a 2-core AMD EPYC (Zen 3, AVX2 only, 2.45 GHz) in
#: fp32, at the demo's settings (measured there: 517 img/s at 10.47 GFLOP per step for SimCLR, 404
#: img/s at 14.55 GFLOP for CO-SimCLR before its local projector ran once per view)
AVX2_GFLOPS = {"simclr": 42.0, "co_simclr": 46.0}
#: seconds the other stages took there, with the code before the batched crops (upper bounds: each
#: does the same work or less now): one evaluation of an encoder (the random-init stage / 3), the report
AVX2_EVAL_S = 13.3
AVX2_REPORT_S = 46.0


def flop_per_step(cfg: Config) -> float:
    """FLOP of one training step of ``cfg`` on a batch of its data (``FlopCounterMode``: forward and
    backward of convolutions and matrix products), counted on the second step."""
    from torch.utils.flop_counter import FlopCounterMode

    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    data = setup_data(cfg, 1)
    parts = build_parts(cfg, rt, make_schedule(cfg, data), data.num_classes)
    loader = iter(build_loader(data.dataset, cfg.train.batch_size, shuffle=True, seed=0, epoch=0, num_workers=0,
                               drop_last=True))
    for i in range(2):
        batch = next(loader)
        views = [v.to(rt.device) for v in (batch.view1, batch.view2, *batch.local_views)]
        clean = batch.clean.to(rt.device) if batch.clean is not None else None
        counter = FlopCounterMode(display=False)
        with counter:
            train_step(parts, views, batch.label.to(rt.device), 0, i, i, 0, clean)
    return float(counter.get_total_flops())


def startup_seconds() -> float:
    """Wall seconds of a fresh interpreter importing what ``cossl-train demo`` imports."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import cossl_train.cli, cossl_train.experiments.demo, "
                    "cossl_analysis.report"], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return time.perf_counter() - t0


def stage_table(timings: dict[str, Any], startup: float) -> list[tuple[str, float, float, float]]:
    """(stage, wall s, of which pre-training s, of which evaluation s) rows."""
    rows = [("start-up (imports, fresh process)", startup, 0.0, 0.0)]
    for st in timings["stages"]:
        rows.append((st["what"], st["seconds"], st.get("train_seconds", 0.0), st.get("eval_seconds", 0.0)))
    return rows


def estimate(flops: dict[str, float], steps: int, seeds: int, rates: dict[str, float], eval_s: float,
             report_s: float, startup: float, n_evals: int) -> dict[str, float]:
    """Seconds on the other machine: training FLOP / its GFLOP/s per method, its evaluation and
    report seconds, and the start-up measured here."""
    train = {m: seeds * steps * flops[m] / (rates[m] * 1e9) for m in flops}
    return {**{f"train {m}": t for m, t in train.items()}, "evaluations": n_evals * eval_s, "report": report_s,
            "start-up": startup, "total": sum(train.values()) + n_evals * eval_s + report_s + startup}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo_stages", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/cossl_demo_stages", help="a new folder for the demo's runs")
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--no-report", action="store_true", help="stop after the table (no analysis report)")
    for m in METHODS:
        p.add_argument(f"--gflops-{m.replace('_', '-')}", type=float, default=AVX2_GFLOPS[m],
                       help=f"achieved GFLOP/s of {m}'s training step on the machine estimated for "
                            f"(default {AVX2_GFLOPS[m]}: measured on a 2-core AVX2 EPYC at 2.45 GHz)")
    p.add_argument("--eval-seconds", type=float, default=AVX2_EVAL_S,
                   help=f"seconds of one evaluation there (default {AVX2_EVAL_S})")
    p.add_argument("--report-seconds", type=float, default=AVX2_REPORT_S,
                   help=f"seconds of the report there (default {AVX2_REPORT_S})")
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("overrides", nargs="*", help="the demo's key=value overrides, e.g. train.precision=fp32")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"demo_stages: {out} is not empty; the demo would reuse its runs (give a new --out)", file=sys.stderr)
        return 2
    startup = startup_seconds()
    base = demo_config(args.overrides)
    rt = resolve_runtime(base.train.device, base.train.precision)
    t0 = time.perf_counter()
    run_demo(out, seeds=args.seeds, progress=False, overrides=args.overrides, report=not args.no_report)
    wall = time.perf_counter() - t0
    timings = json.loads((out / "timings.json").read_text())
    flops = {m: flop_per_step(apply_overrides(base, [f"method.name={m}"])) for m in METHODS}
    steps = setup_data(base, 1).steps_per_epoch * base.train.epochs
    rates = {m: getattr(args, f"gflops_{m}") for m in METHODS}
    n_evals = args.seeds * (len(METHODS) + 1)  # every run and the random encoder of every seed
    est = estimate(flops, steps, args.seeds, rates, args.eval_seconds, 0.0 if args.no_report else args.report_seconds,
                   startup, n_evals)

    print(f"\nThe demo's stages on this machine ({torch.get_num_threads()} threads, {rt.precision}: "
          f"{rt.precision_reason}; {base.train.epochs} epochs x {steps // base.train.epochs} steps, "
          f"{args.seeds} seeds):\n")
    print("| stage | wall (s) | pre-training (s) | evaluation (s) |\n|---|---:|---:|---:|")
    rows = stage_table(timings, startup)
    for what, secs, train_s, eval_s in rows:
        print(f"| {what} | {secs:.1f} | {train_s:.1f} | {eval_s:.1f} |")
    print(f"| total (demo wall + start-up) | {wall + startup:.1f} | {sum(r[2] for r in rows):.1f} | "
          f"{sum(r[3] for r in rows):.1f} |")
    total_flop = sum(args.seeds * steps * f for f in flops.values())
    print("\nTraining FLOP: " + ", ".join(f"{m} {f / 1e9:.2f} GFLOP/step" for m, f in flops.items())
          + f" x {steps} steps x {args.seeds} seeds = {total_flop / 1e12:.1f} TFLOP")
    achieved = {m: args.seeds * steps * flops[m] / 1e9 / sum(r[2] for r in rows if r[0].startswith(f"{m} seed"))
                for m in METHODS}
    print("Achieved here in the training loop: " + ", ".join(f"{m} {g:.1f} GFLOP/s" for m, g in achieved.items()))
    print(f"\nEstimate for the other machine ({', '.join(f'{m} at {r:g} GFLOP/s' for m, r in rates.items())}; "
          f"{n_evals} evaluations at {args.eval_seconds:g} s; report {args.report_seconds:g} s; start-up as here):")
    for k, v in est.items():
        print(f"  {k}: {v:.0f} s" + (f" ({v / 60:.1f} min)" if k == "total" else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"timings": timings, "startup_s": startup, "wall_s": wall,
                                               "flop_per_step": flops, "steps": steps, "seeds": args.seeds,
                                               "achieved_gflops": achieved, "rates": rates, "estimate_s": est,
                                               "overrides": args.overrides, "precision": rt.precision,
                                               "random_label": RANDOM}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
