"""Methods compared over several seeds: ``cossl-train compare``.

Each (method, seed) is a run of one config in ``<out>/<method>/seed<k>/``, evaluated offline, beside
a randomly initialised encoder per seed; ``results.md`` gives mean ± std over seeds and the paired
difference from the first method (``results.csv``, ``results.json``: the numbers).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text
from ..config import Config, apply_overrides, load_config
from ..errors import USER_ERRORS, CosslError, report
from ..paired import mean_std
from ..trainer import CHECKPOINT_NAME
from .runs import ensure_evaluated, ensure_trained

log = logging.getLogger("cossl_train")

RANDOM = "random init"
METRICS = ("linear_top1", "linear_top5", "knn_top1")


@dataclass
class Comparison:
    """Per-seed scores of each method (``RANDOM`` included), and how long pre-training took."""

    methods: list[str]
    seeds: list[int]
    scores: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    seconds: dict[str, dict[int, float]] = field(default_factory=dict)
    protocol: str = "fast"

    def values(self, method: str, metric: str) -> list[float]:
        return [self.scores[method][s][metric] for s in self.seeds]


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / method / f"seed{seed}"


def _random_scores(cfg: Config, progress: bool) -> dict[str, float]:
    from ..evaluate import evaluate_encoder
    from ..methods import build_encoder
    from ..runtime import resolve_device, seed_everything

    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    res = evaluate_encoder(build_encoder(cfg).to(device), cfg, device=device, progress=progress)
    return {m: res[m] for m in METRICS}


def compare(base: Config, methods: Sequence[str], seeds: Sequence[int], out: str | Path, random_init: bool = True,
            progress: bool = True) -> Comparison:
    """Pre-train and evaluate every (method, seed); see the module docstring."""
    out = Path(out)
    comp = Comparison(list(methods), list(seeds), protocol=base.eval.linear_protocol)
    names = ([RANDOM] if random_init else []) + list(methods)
    for name in names:
        comp.scores[name], comp.seconds[name] = {}, {}
        for seed in seeds:
            cfg = apply_overrides(base, [f"train.seed={seed}"] + (
                [] if name == RANDOM else [f"method.name={name}", f"train.out_dir={run_dir(out, name, seed)}"]))
            if name == RANDOM:
                comp.scores[name][seed], comp.seconds[name][seed] = _random_scores(cfg, progress), 0.0
                continue
            summary = ensure_trained(cfg, progress)
            comp.seconds[name][seed] = float(summary.get("train_seconds", float("nan")))
            res = ensure_evaluated(Path(cfg.train.out_dir) / CHECKPOINT_NAME, cfg, progress)
            comp.scores[name][seed] = {m: res[m] for m in METRICS}
            log.info("%s seed %d: linear top-1 %.2f%%, kNN top-1 %.2f%%", name, seed, res["linear_top1"],
                     res["knn_top1"])
    return comp


def format_table(comp: Comparison) -> str:
    """Markdown: per method, mean ± std over seeds of each metric, and the paired difference from
    the first pre-trained method."""
    from ..evaluate import PROTOCOLS

    ref = comp.methods[0]
    head = (f"| encoder | {PROTOCOLS[comp.protocol]}: top-1 (%) | top-5 (%) | weighted kNN top-1 (%) | "
            f"linear top-1 vs {ref} | kNN top-1 vs {ref} | training (s/run) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for name in comp.scores:
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in (mean_std(comp.values(name, k)) for k in METRICS)]
        diffs = []
        for metric in ("linear_top1", "knn_top1"):
            if name == ref:
                diffs.append("")
                continue
            d = [a - b for a, b in zip(comp.values(name, metric), comp.values(ref, metric), strict=True)]
            m, s = mean_std(d)
            diffs.append(f"{m:+.2f} ± {s:.2f}")
        secs = statistics.fmean(comp.seconds[name].values())
        lines.append(f"| {name} | {' | '.join(cells)} | {' | '.join(diffs)} | {secs:.0f} |")
    return "\n".join(lines)


def write_results(comp: Comparison, out: str | Path) -> Path:
    """``results.md``, ``results.csv`` and ``results.json`` in ``out``; returns the Markdown path."""
    out = Path(out)
    table = format_table(comp)
    atomic_write_text(out / "results.md", table + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["encoder", "seed", "linear_protocol", *METRICS, "pretrain_s"])
    for name, per_seed in comp.scores.items():
        for seed in comp.seeds:
            writer.writerow([name, seed, comp.protocol, *(per_seed[seed][m] for m in METRICS),
                             round(comp.seconds[name][seed], 2)])
    atomic_write_text(out / "results.csv", buffer.getvalue())
    summary = {name: {m: dict(zip(("mean", "std"), mean_std(comp.values(name, m)), strict=True)) for m in METRICS}
               for name in comp.scores}
    atomic_write_text(out / "results.json", json.dumps({
        "methods": comp.methods, "seeds": comp.seeds, "linear_protocol": comp.protocol, "scores": comp.scores,
        "summary": summary, "pretrain_seconds": comp.seconds}, indent=2) + "\n")
    return out / "results.md"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cossl-train compare", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML file (default: the config defaults)")
    p.add_argument("--methods", default="byol,co_byol", help="comma-separated method names (default: byol,co_byol)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default: 3)")
    p.add_argument("--out", default="runs/compare", help="output folder (default: runs/compare)")
    p.add_argument("--no-random", action="store_true", help="leave out the randomly initialised encoder")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value applied to every run")
    return p


def main(argv: list[str] | None = None) -> int:
    from ..methods import method_names
    from ..trainer import setup_logging

    args = build_parser().parse_intermixed_args(argv)
    try:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        bad = [m for m in methods if m not in method_names()]
        if bad or not methods:
            raise CosslError(f"--methods {args.methods!r}: each must be one of {', '.join(method_names())}")
        if args.seeds < 1:
            raise CosslError(f"--seeds must be >= 1, got {args.seeds}")
        base = load_config(args.config, args.overrides)
        setup_logging(None)
        comp = compare(base, methods, range(args.seeds), args.out, not args.no_random, not args.no_progress)
    except USER_ERRORS as e:
        return report("cossl-train compare", e)
    path = write_results(comp, args.out)
    print(format_table(comp))
    print(f"\n{len(comp.seeds)} seeds per method; results in {path.parent}/")
    return 0
