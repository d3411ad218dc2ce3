"""Methods compared over several seeds, optionally over a sweep of config values: ``cossl-train compare``.

Each (combination, method, seed) is a run in ``<out>/[<combination>/]<method>/seed<k>/``, evaluated
offline, beside a randomly initialised encoder per seed; ``results.md`` gives mean ± std over seeds
and, within each combination, the per-seed differences paired by seed (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import logging
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import jsonio
from ..atomic import atomic_write_text
from ..config import Config, apply_overrides, load_config, to_dict
from ..errors import USER_ERRORS, ConfigError, CosslError, report
from ..paired import Paired, mean_std, mean_std_text, paired
from ..trainer import CHECKPOINT_NAME
from .runs import ensure_evaluated, ensure_trained

if TYPE_CHECKING:  # the analysis layer is imported only when a report is asked for
    from cossl_analysis.config import AnalysisConfig

log = logging.getLogger("cossl_train")

RANDOM = "random init"
METRICS = ("linear_top1", "linear_top5", "knn_top1")
#: a difference of top-1 (points) too small to matter: "no difference" only within it (cossl_train.paired)
ACCURACY_MARGIN = 1.0
#: keys a sweep may not set: the comparison itself sets them (--methods, --seeds, --out)
RESERVED = ("method.name", "train.seed", "train.out_dir")

#: one combination of swept values: ((key, value), ...) in the order the sweeps were given
Combo = tuple[tuple[str, str], ...]


def combo_label(combo: Combo) -> str:
    """``co.local_weight=0.7, co.shared_heads=true`` (empty for no sweep)."""
    return ", ".join(f"{k}={v}" for k, v in combo)


def combo_dir(combo: Combo) -> str:
    """The combination's folder name: ``co.local_weight=0.7__co.shared_heads=true``."""
    return "__".join(f"{k}={re.sub(r'[^A-Za-z0-9_.,=+-]', '_', v)}" for k, v in combo)


def relevant(combo: Combo, method: str) -> Combo:
    """The part of ``combo`` that changes ``method``'s run: ``co.*`` keys mean nothing to a base
    method, whose run is then shared by every combination that differs only there."""
    return combo if method.startswith("co_") else tuple((k, v) for k, v in combo if not k.startswith("co."))


def run_dir(out: Path, method: str, seed: int, combo: Combo = ()) -> Path:
    part = relevant(combo, method)
    return (out / combo_dir(part) if part else out) / method / f"seed{seed}"


def _split_values(text: str) -> list[str]:
    """``0.3,0.7`` -> ['0.3', '0.7']; commas inside brackets stay (``[0,1],[0.5,1]``)."""
    values, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(cur)
            cur = ""
        else:
            cur += ch
    return [v.strip() for v in [*values, cur] if v.strip()]


def parse_sweeps(specs: Sequence[str], base: Config) -> list[Combo]:
    """``["co.local_weight=0.3,0.7", "co.shared_heads=false,true"]`` -> every combination (the
    cartesian product, first sweep outermost), each value checked against the config: an unknown
    key or a value of the wrong type is one line naming it."""
    axes: list[list[tuple[str, str]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not _split_values(values):
            raise ConfigError(f"--sweep {spec!r} is not of the form key=value1,value2,...")
        if key in RESERVED:
            raise ConfigError(f"--sweep {key}: set by the comparison itself (use --methods, --seeds, --out)")
        if any(key == k for axis in axes for k, _ in axis):
            raise ConfigError(f"--sweep {key} is given twice")
        for v in _split_values(values):
            apply_overrides(base, [f"{key}={v}"])  # a bad key or value: ConfigError naming it
        axes.append([(key, v) for v in _split_values(values)])
    return [tuple(c) for c in itertools.product(*axes)] if axes else [()]


@dataclass
class Comparison:
    """Per-seed scores of each (combination, method), ``RANDOM`` included, pre-training and
    evaluation seconds."""

    methods: list[str]
    seeds: list[int]
    combos: list[Combo] = field(default_factory=lambda: [()])
    scores: dict[tuple[Combo, str], dict[int, dict[str, float]]] = field(default_factory=dict)
    seconds: dict[tuple[Combo, str], dict[int, float]] = field(default_factory=dict)
    protocol: str = "fast"
    #: wall seconds of each (combination, method, seed)'s evaluation (reading a stored one included)
    eval_seconds: dict[tuple[Combo, str], dict[int, float]] = field(default_factory=dict)

    def values(self, method: str, metric: str, combo: Combo = ()) -> list[float]:
        return [self.scores[combo, method][s][metric] for s in self.seeds]

    def rows(self) -> list[tuple[Combo, str]]:
        return [(c, m) for c in self.combos for m in ([RANDOM] if (c, RANDOM) in self.scores else []) + self.methods]


def reference(method: str, methods: Sequence[str]) -> str:
    """What ``method`` is paired with: a CO method with its base method when that is compared too,
    everything else with the first method."""
    base = method[3:] if method.startswith("co_") else None
    return base if base in methods else methods[0]


def _random_scores(cfg: Config, cache: Path, progress: bool) -> dict[str, float]:
    """The random encoder's evaluation, kept in ``cache`` and reused while model, data and
    evaluation settings are the same (sweeps of the CO term's keys share one)."""
    from ..evaluate import evaluate_encoder
    from ..methods import build_encoder
    from ..runtime import resolve_device, seed_everything
    from .runs import eval_settings

    d = to_dict(cfg)
    key = json.loads(json.dumps({"backbone": d["backbone"], "augment": d["augment"], "seed": cfg.train.seed,
                                 **eval_settings(cfg)}))
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
        except ValueError:
            stored = {}
        if stored.get("settings") == key:
            return stored["scores"]
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    res = evaluate_encoder(build_encoder(cfg).to(device), cfg, device=device, progress=progress)
    scores = {m: res[m] for m in METRICS}
    atomic_write_text(cache, jsonio.dumps({"settings": key, "scores": scores}, indent=2) + "\n")
    return scores


def compare(base: Config, methods: Sequence[str], seeds: Sequence[int], out: str | Path, random_init: bool = True,
            progress: bool = True, combos: Sequence[Combo] = ((),), on_run: Any = None) -> Comparison:
    """Pre-train and evaluate every (combination, method, seed); see the module docstring.
    ``on_run(label)`` is called after each run or random-init evaluation (progress across runs)."""
    out = Path(out)
    comp = Comparison(list(methods), list(seeds), list(combos), protocol=base.eval.linear_protocol)
    for combo in combos:
        for name in ([RANDOM] if random_init else []) + list(methods):
            # only what changes this method's run, so that a shared run keeps one config
            cfg_c = apply_overrides(base, [f"{k}={v}" for k, v in relevant(combo, name)])
            comp.scores[combo, name], comp.seconds[combo, name], comp.eval_seconds[combo, name] = {}, {}, {}
            for seed in seeds:
                _one(comp, cfg_c, out, combo, name, seed, progress)
                if on_run is not None:
                    on_run(f"{name} seed {seed}")
    return comp


def _one(comp: Comparison, cfg_c: Config, out: Path, combo: Combo, name: str, seed: int, progress: bool) -> None:
    cfg = apply_overrides(cfg_c, [f"train.seed={seed}"])
    if name == RANDOM:
        cache = run_dir(out, "random_init", seed, combo).with_suffix(".json")
        t0 = time.perf_counter()
        comp.scores[combo, name][seed], comp.seconds[combo, name][seed] = _random_scores(cfg, cache, progress), 0.0
        comp.eval_seconds[combo, name][seed] = time.perf_counter() - t0
        return
    cfg = apply_overrides(cfg, [f"method.name={name}", f"train.out_dir={run_dir(out, name, seed, combo)}"])
    summary = ensure_trained(cfg, progress)
    comp.seconds[combo, name][seed] = float(summary.get("train_seconds", float("nan")))
    t0 = time.perf_counter()
    res = ensure_evaluated(Path(cfg.train.out_dir) / CHECKPOINT_NAME, cfg, progress)
    comp.eval_seconds[combo, name][seed] = time.perf_counter() - t0
    comp.scores[combo, name][seed] = {m: res[m] for m in METRICS}
    log.info("%s%s seed %d: linear top-1 %.2f%%, kNN top-1 %.2f%%", name, f" [{combo_label(combo)}]" if combo else "",
             seed, res["linear_top1"], res["knn_top1"])


def paired_rows(comp: Comparison) -> list[tuple[Combo, Paired]]:
    """Within each combination: every method against its reference, and the first method against
    the random encoder (the floor), for linear and kNN top-1, paired by seed."""
    out = []
    for combo in comp.combos:
        pairs = [(m, reference(m, comp.methods)) for m in comp.methods if m != reference(m, comp.methods)]
        if (combo, RANDOM) in comp.scores:
            pairs.append((comp.methods[0], RANDOM))
        for a, b in pairs:
            for metric, label in (("linear_top1", "linear top-1"), ("knn_top1", "kNN top-1")):
                out.append((combo, paired(a, b, label, comp.values(a, metric, combo), comp.values(b, metric, combo),
                                          unit=" pt", margin=ACCURACY_MARGIN)))
    return out


def format_table(comp: Comparison) -> str:
    """Markdown: per (combination, method), mean ± std over seeds of each metric and the mean ± std
    of its per-seed difference from its reference (see :func:`reference`)."""
    from ..evaluate import PROTOCOLS

    sweep = comp.combos != [()]
    head = (("| combination " if sweep else "") + f"| encoder | {PROTOCOLS[comp.protocol]}: top-1 (%) | top-5 (%) | "
            "weighted kNN top-1 (%) | vs | linear top-1 diff | kNN top-1 diff | training (s/run) |")
    lines = [head, ("|---" if sweep else "") + "|---|---:|---:|---:|---|---:|---:|---:|"]
    for combo, name in comp.rows():
        cells = [mean_std_text(comp.values(name, k, combo)) for k in METRICS]
        ref = reference(name, comp.methods) if name != RANDOM else comp.methods[0]
        diffs = ["", ""] if name == ref else [
            mean_std_text([a - b for a, b in zip(comp.values(name, metric, combo), comp.values(ref, metric, combo),
                                                 strict=True)], sign=True)
            for metric in ("linear_top1", "knn_top1")]
        secs = statistics.fmean(comp.seconds[combo, name].values())
        lead = f"| {combo_label(combo)} " if sweep else ""
        lines.append(f"{lead}| {name} | {' | '.join(cells)} | {'' if name == ref else ref} | {' | '.join(diffs)} | "
                     f"{secs:.0f} |")
    return "\n".join(lines)


def format_paired(comp: Comparison) -> str:
    """One sentence per paired comparison (which way it falls, resolved or not)."""
    return "\n".join(f"- {f'[{combo_label(c)}] ' if c else ''}{p.sentence()}" for c, p in paired_rows(comp))


def write_results(comp: Comparison, out: str | Path) -> Path:
    """``results.md``, ``results.csv`` and ``results.json`` in ``out``; returns the Markdown path."""
    out = Path(out)
    table = format_table(comp)
    atomic_write_text(out / "results.md", f"{table}\n\nPaired by seed:\n\n{format_paired(comp)}\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["combination", "encoder", "seed", "linear_protocol", *METRICS, "pretrain_s"])
    for combo, name in comp.rows():
        for seed in comp.seeds:
            writer.writerow([combo_label(combo), name, seed, comp.protocol,
                             *(comp.scores[combo, name][seed][m] for m in METRICS),
                             round(comp.seconds[combo, name][seed], 2)])
    atomic_write_text(out / "results.csv", buffer.getvalue())
    atomic_write_text(out / "results.json", jsonio.dumps(_as_json(comp), indent=2) + "\n")
    write_curves(comp, out)
    return out / "results.md"


def _as_json(comp: Comparison) -> dict[str, Any]:
    rows = [{"combination": dict(combo), "encoder": name, "scores": comp.scores[combo, name],
             "pretrain_seconds": comp.seconds[combo, name],
             "summary": {m: dict(zip(("mean", "std"), mean_std(comp.values(name, m, combo)), strict=True))
                         for m in METRICS}} for combo, name in comp.rows()]
    pairs = [{"combination": dict(c), "a": p.a, "b": p.b, "metric": p.metric, "diffs": list(p.diffs),
              "mean": p.mean, "std": p.std, "positive": p.positive, "resolvable": p.resolvable,
              "sentence": p.sentence()} for c, p in paired_rows(comp)]
    def name(combo: Combo, enc: str) -> str:  # "encoder", or "combination | encoder" in a sweep
        return f"{combo_label(combo)} | {enc}" if combo else enc

    return {"methods": comp.methods, "seeds": comp.seeds, "linear_protocol": comp.protocol,
            "combinations": [dict(c) for c in comp.combos], "rows": rows, "paired": pairs,
            "scores": {name(tuple(r["combination"].items()), r["encoder"]): r["scores"] for r in rows},
            "summary": {name(tuple(r["combination"].items()), r["encoder"]): r["summary"] for r in rows},
            "pretrain_seconds": {name(tuple(r["combination"].items()), r["encoder"]): r["pretrain_seconds"]
                                 for r in rows}}


#: per-epoch columns of a run's epochs.csv drawn as learning curves (when the run logged them)
CURVES = {"online_probe_val_top1": "online probe top-1 (%)", "knn_top1": "weighted kNN top-1 (%)"}


def learning_curves(comp: Comparison, out: str | Path) -> dict[tuple[Combo, str], dict[str, list[list[float]]]]:
    """Per (combination, method): each :data:`CURVES` column of every seed's ``epochs.csv``
    (seeds x epochs), for the runs that logged it (``train.knn_every``, the online probe)."""
    curves: dict[tuple[Combo, str], dict[str, list[list[float]]]] = {}
    for combo, name in comp.rows():
        if name == RANDOM:
            continue
        for seed in comp.seeds:
            path = run_dir(Path(out), name, seed, combo) / "epochs.csv"
            rows = list(csv.DictReader(open(path))) if path.is_file() else []
            for col in CURVES:
                vals = [float(r[col]) for r in rows if r.get(col) not in (None, "", "nan")]
                if vals:
                    curves.setdefault((combo, name), {}).setdefault(col, []).append(vals)
    return curves


def write_curves(comp: Comparison, out: str | Path) -> Path | None:
    """``curves.csv`` (method, seed, epoch, metric, value) and ``curves.png`` (mean ± std over seeds
    per epoch, one panel per metric); None when no run logged a per-epoch evaluation."""
    curves = learning_curves(comp, out)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["combination", "encoder", "seed", "epoch", "metric", "value"])
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.6), squeeze=False)
    for ax, (col, title) in zip(axes[0], CURVES.items(), strict=True):
        for (combo, name), per in curves.items():
            for seed, vals in zip(comp.seeds, per.get(col, []), strict=False):
                for epoch, v in enumerate(vals, 1):
                    writer.writerow([combo_label(combo), name, seed, epoch, col, v])
            if col in per and per[col]:
                n = min(len(v) for v in per[col])
                arr = np.array([v[:n] for v in per[col]])
                x = np.arange(1, n + 1)
                label = name + (f" [{combo_label(combo)}]" if combo else "")
                ax.plot(x, arr.mean(0), marker="o", label=f"{label} ({len(arr)} seed{'s' if len(arr) > 1 else ''})")
                if len(arr) > 1:  # one seed has no spread to draw
                    ax.fill_between(x, arr.mean(0) - arr.std(0, ddof=1), arr.mean(0) + arr.std(0, ddof=1), alpha=0.2)
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
        if ax.lines:  # a panel no run logged (the online probe off) has no legend
            ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(out) / "curves.png", dpi=120)
    plt.close(fig)
    atomic_write_text(Path(out) / "curves.csv", buffer.getvalue())
    return Path(out) / "curves.png"


def report_groups(comp: Comparison, out: str | Path) -> dict[str, list[Path]]:
    """The comparison's runs as report groups: label -> checkpoints (one per seed)."""
    from ..methods import display_name

    groups = {}
    for combo, name in comp.rows():
        if name == RANDOM:
            continue
        label = display_name(name) + (f" ({combo_label(relevant(combo, name))})" if relevant(combo, name) else "")
        groups.setdefault(label, [run_dir(Path(out), name, s, combo) / CHECKPOINT_NAME for s in comp.seeds])
    return groups


def _analysis_settings(settings: list[str]) -> AnalysisConfig:
    """The report's AnalysisConfig, checked before any training starts: ``demo`` expands to the
    demo's reduced settings, later settings win."""
    from cossl_analysis.config import load_analysis_config

    from .demo import REPORT_SETTINGS

    expanded = [x for s in settings for x in (REPORT_SETTINGS if s == "demo" else (s,))]
    return load_analysis_config(expanded)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cossl-train compare", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML file (default: the config defaults)")
    p.add_argument("--methods", default="byol,co_byol", help="comma-separated method names (default: byol,co_byol)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default: 3)")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="compare every combination of these values (repeatable: the cartesian product)")
    p.add_argument("--out", default="runs/compare", help="output folder (default: runs/compare)")
    p.add_argument("--no-random", action="store_true", help="leave out the randomly initialised encoder")
    p.add_argument("--report", action="store_true", help="then every analysis on the runs, as OUT/report/")
    p.add_argument("--analysis", action="append", default=[], metavar="KEY=VALUE",
                   help="an analysis setting for --report (repeatable; 'demo' = the demo's reduced settings)")
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
        combos = parse_sweeps(args.sweep, base)
        analysis = _analysis_settings(args.analysis) if args.report else None
        setup_logging(None)
        comp = compare(base, methods, range(args.seeds), args.out, not args.no_random, not args.no_progress, combos)
        path = write_results(comp, args.out)
        print(format_table(comp))
        print(f"\nPaired by seed:\n{format_paired(comp)}")
        print(f"\n{len(comp.seeds)} seeds per method, {len(combos)} combination(s); results in {path.parent}/")
        if args.report:
            from cossl_analysis.report import write_report

            page = write_report(report_groups(comp, args.out), Path(args.out) / "report", analysis,
                                progress=not args.no_progress)
            print(f"report: {page}")
    except USER_ERRORS as e:
        return report("cossl-train compare", e)
    return 0
