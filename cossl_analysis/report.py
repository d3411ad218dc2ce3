"""``cossl-robustness``: robustness sweeps of several checkpoints side by side, as one report.

    cossl-robustness BYOL.pt CO_BYOL.pt --out runs/robustness [options] [data.root=... overrides]

Runs the clean, corruption (imagecorruptions, 19 corruptions x severities 1-5), adversarial
(torchattacks FGSM/PGD, L-inf budgets in /255 units) and internal corruption sweeps on the
validation split of the first checkpoint's data config, plus the large-crop study (accuracy
against each checkpoint's pre-training ``augment.c_min``), and writes into ``--out``:

* ``report.md`` (or ``report.html``, images embedded): tables, one plot per sweep, methods side by side;
* ``robustness.json`` and ``robustness.csv``: the raw numbers (the CSV in long format);
* ``corruption.png``, ``adversarial.png``, ``internal.png``, ``large_crop.png``;
* ``cells.json``: every finished cell, written as soon as it is computed, so that rerunning the
  same command after an interruption skips what is done;
* ``corruption_cache/``: the corrupted image sets (shared by all checkpoints and later runs);
* ``probes/``: linear probes trained with ``--train-probe``.

Bad input (unknown corruption, severity outside 1-5, checkpoint without probe, unlabelled
evaluation set, ...) ends with one line on stderr and exit status 2; COSSL_DEBUG=1 shows the
traceback. Ctrl-C keeps the finished cells and exits with 130.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import html
import io
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from matplotlib.figure import Figure

from cossl_analysis.robustness import (
    SWEEPS,
    CellStore,
    EvalSet,
    RobustnessError,
    SweepOptions,
    SweepResult,
    check_classes,
    check_compatible,
    ensure_probes,
    load_eval_set,
    load_models,
    parse_attacks,
    parse_corruptions,
    parse_eps,
    parse_internal_kinds,
    parse_severities,
    parse_strengths,
    parse_sweeps,
    preflight,
    run_sweeps,
)
from cossl_train.atomic import atomic_write_text

PROG = "cossl-robustness"
#: ``section.key=value`` arguments are config overrides, everything else a checkpoint path
_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")
CSV_COLUMNS = ("checkpoint", "label", "method", "c_min", "sweep", "setting", "severity", "eps_255", "strength",
               "accuracy", "n_images")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


class _UsageError(Exception):
    """An argparse error, reported as one line like every other bad input."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print the usage block first
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.splitlines()[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="CKPT|key=value",
                   help="checkpoints to compare, and data.*/eval.* overrides of the evaluation data config "
                        "(e.g. data.root=/data/imagenet100 data.num_workers=8)")
    p.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument("--labels", help="comma-separated names of the checkpoints (default: their method names)")
    p.add_argument("--images", type=int, default=1000,
                   help="evaluate on a fixed random subset of this many validation images (0 = all)")
    p.add_argument("--sweeps", default=",".join(SWEEPS),
                   help=f"which of {', '.join(SWEEPS)} to run, or 'none' (clean accuracy and large-crop study only)")
    p.add_argument("--corruptions", default="all",
                   help="'all' (19), 'common' (15), groups (noise, blur, weather, digital, extra) or names")
    p.add_argument("--severities", default="1,2,3,4,5", help="corruption severities (1-5)")
    p.add_argument("--min-size", type=int, default=32,
                   help="smaller images are upsampled by an integer factor for imagecorruptions and averaged back")
    p.add_argument("--eps", default="0.5,1,2,4", help="L-inf budgets in /255 units of pixel values")
    p.add_argument("--attacks", default="fgsm,pgd", help="fgsm, pgd (L-inf, random start)")
    p.add_argument("--pgd-steps", type=int, default=10, help="PGD iterations (step size 2.5 eps / steps)")
    p.add_argument("--internal-kind", default="noise", help="noise, zero, or both comma-separated")
    p.add_argument("--internal-strengths", default=None,
                   help="internal corruption strengths (default: noise 0-4 x feature std, zero 0-1 fraction)")
    p.add_argument("--internal-module", default="",
                   help="encoder submodule whose output is corrupted, e.g. backbone.layer3 ('' = final feature map)")
    p.add_argument("--format", choices=("md", "html"), default="md", help="report format")
    p.add_argument("--train-probe", action="store_true",
                   help="train a linear probe (eval.* settings) for checkpoints that have none")
    p.add_argument("--workers", type=int, default=None, help="corruption worker processes (default: every CPU)")
    p.add_argument("--cache-dir", default=None, help="corrupted-set cache (default: OUT/corruption_cache)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="image subset, corruption draws, PGD start, internal noise")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of this process (default: torch's; lower it on a shared machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _options(args: argparse.Namespace, out: Path) -> SweepOptions:
    return SweepOptions(
        sweeps=parse_sweeps(args.sweeps),
        corruptions=parse_corruptions(args.corruptions),
        severities=parse_severities(args.severities),
        eps_255=parse_eps(args.eps),
        attacks=parse_attacks(args.attacks),
        pgd_steps=args.pgd_steps,
        internal_kinds=parse_internal_kinds(args.internal_kind),
        internal_strengths=None if args.internal_strengths is None else parse_strengths(args.internal_strengths),
        internal_module=args.internal_module,
        seed=args.seed,
        min_size=args.min_size,
        workers=args.workers,
        cache_dir=Path(args.cache_dir) if args.cache_dir else out / "corruption_cache",
        batch_size=args.batch_size,
    )


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise RobustnessError(f"--device {spec!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RobustnessError(f"--device {spec} asked for, but CUDA is not available here")
    return device


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, argv: Sequence[str]) -> Path:
    """Everything after parsing: load, sweep, write the report; returns the report's path."""
    from cossl_train.config import apply_overrides

    out = Path(args.out)
    opts = _options(args, out)  # all settings checked before anything slow is loaded
    if args.images < 0:
        raise RobustnessError(f"--images must be >= 0 (0 = the whole split), got {args.images}")
    overrides = [item for item in args.inputs if _OVERRIDE.match(item) and not Path(item).exists()]
    paths = [item for item in args.inputs if item not in overrides]
    if not paths:
        raise RobustnessError("give at least one checkpoint")
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    device = _device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise RobustnessError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    progress = not args.no_progress

    models = load_models(paths, labels, device)
    check_compatible(models, train_probe=args.train_probe)
    preflight(models, opts)
    # The evaluation data: the first checkpoint's data config; only data/eval keys may change.
    cfg = apply_overrides(models[0].config, overrides, sections=("data", "eval"))
    first = (models[0].config.data.dataset, models[0].config.data.root)
    for model in models[1:]:
        if (model.config.data.dataset, model.config.data.root) != first:
            _say(f"note: {model.label} was pre-trained on data.dataset={model.config.data.dataset} "
                 f"data.root={model.config.data.root}; every checkpoint is evaluated on the first one's data")
    data = load_eval_set(cfg, args.images, args.seed, progress)
    _say(f"evaluation set: {data.description}, {len(data.labels)} of {data.split_size} images, "
         f"{data.images.shape[-2]}x{data.images.shape[-1]} px, {data.num_classes} classes")
    out.mkdir(parents=True, exist_ok=True)
    if args.train_probe:
        models = ensure_probes(models, cfg, out / "probes", device, progress)
    check_classes(models, data)

    store = CellStore(out / "cells.json")
    result = run_sweeps(models, data, opts, store, progress)
    if result.reused:
        _say(f"resumed: {result.reused} cells reused from {store.path}, {result.computed} computed")
    return write_report(result, out, args.format, command=[PROG, *argv])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cossl-robustness``; returns the exit status (2 for bad input)."""
    from cossl_analysis.corruptions import shutdown_workers
    from cossl_train.checkpoint import CheckpointError
    from cossl_train.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_intermixed_args(argv)
    except _UsageError as err:
        print(f"{PROG}: error: {err} (see {PROG} --help)", file=sys.stderr)
        return 2
    except SystemExit as err:  # --help
        return int(err.code or 0)
    known = (RobustnessError, ConfigError, CheckpointError, FileNotFoundError, ImportError, ValueError)
    try:
        report = run(args, argv)
    except KeyboardInterrupt:
        _say(f"interrupted; the finished cells are kept in {Path(args.out) / 'cells.json'}: "
             "rerun the same command to resume")
        return 130
    except known as err:
        if os.environ.get("COSSL_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    finally:
        shutdown_workers()  # the corruption pool outlives calls on purpose; not the process
    print(f"report: {report}")
    return 0


# --------------------------------------------------------------------------------------------
# Summaries of the records
# --------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize(result: SweepResult) -> dict[str, dict[str, Any]]:
    """Per label: clean accuracy, nested sweep numbers, and the corruption aggregates.

    ``mean_corruption_accuracy`` is the mean over the swept corruptions and severities;
    ``relative_drop`` is ``(clean - mean_corruption_accuracy) / clean``.
    """
    out: dict[str, dict[str, Any]] = {}
    for model in result.models:
        entry: dict[str, Any] = {"corruption": defaultdict(dict), "adversarial": defaultdict(dict),
                                 "internal": defaultdict(dict)}
        for rec in (r for r in result.records if r["label"] == model.label):
            if rec["sweep"] == "clean":
                entry["clean"] = rec["accuracy"]
            elif rec["sweep"] == "corruption":
                entry["corruption"][rec["setting"]][rec["severity"]] = rec["accuracy"]
            elif rec["sweep"] == "adversarial":
                entry["adversarial"][rec["setting"]][rec["eps_255"]] = rec["accuracy"]
            else:
                entry["internal"][rec["setting"]][rec["strength"]] = rec["accuracy"]
        corr = entry["corruption"]
        if corr:
            severities = sorted({s for per in corr.values() for s in per})
            entry["corruption_by_severity"] = {s: _mean([per[s] for per in corr.values()]) for s in severities}
            entry["corruption_by_name"] = {name: _mean(list(per.values())) for name, per in corr.items()}
            mca = _mean([a for per in corr.values() for a in per.values()])
            entry["mean_corruption_accuracy"] = mca
            clean = entry["clean"]
            entry["relative_drop"] = (clean - mca) / clean if clean > 0 and mca is not None else None
        out[model.label] = {k: (dict(v) if isinstance(v, defaultdict) else v) for k, v in entry.items()}
    return out


def large_crop(result: SweepResult, summary: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per method, its checkpoints sorted by pre-training ``c_min`` with their accuracies."""
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for model in result.models:
        s = summary[model.label]
        by_method[model.method].append({"c_min": model.c_min, "label": model.label, "clean": s["clean"],
                                        "mean_corruption_accuracy": s.get("mean_corruption_accuracy")})
    return {method: sorted(rows, key=lambda r: r["c_min"]) for method, rows in by_method.items()}


# --------------------------------------------------------------------------------------------
# Plots (matplotlib's object API: no pyplot state, no display needed)
# --------------------------------------------------------------------------------------------


def _pct(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else 100 * v for v in values], dtype=float)


def _chance(ax: Any, data: EvalSet) -> None:
    ax.axhline(100 / data.num_classes, color="gray", linestyle=":", linewidth=1, label="chance")


def plot_corruptions(result: SweepResult, summary: dict[str, dict[str, Any]], path: Path) -> None:
    """Left: mean over corruptions against severity (0 = clean); right: each corruption's mean
    over severities, the methods' bars side by side."""
    names = list(result.opts.corruptions)
    labels = [m.label for m in result.models]
    fig = Figure(figsize=(12, max(4.5, 0.3 * len(names) + 1.5)))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.2]})
    for k, label in enumerate(labels):
        s = summary[label]
        sev = [0, *s["corruption_by_severity"]]
        acc = [s["clean"], *s["corruption_by_severity"].values()]
        left.plot(sev, _pct(acc), marker="o", color=f"C{k % 10}", label=label)
    _chance(left, result.data)
    left.set_xticks(range(0, 6))
    left.set_xticklabels(["clean", "1", "2", "3", "4", "5"])
    left.set_xlabel("severity")
    left.set_ylabel("top-1 accuracy (%), mean over corruptions")
    left.set_title(f"{len(names)} corruptions")
    left.legend(fontsize=8)
    height = 0.8 / len(labels)
    y = np.arange(len(names))
    for k, label in enumerate(labels):
        values = _pct([summary[label]["corruption_by_name"][n] for n in names])
        right.barh(y + (k - (len(labels) - 1) / 2) * height, values, height=height, color=f"C{k % 10}", label=label)
    right.set_yticks(y)
    right.set_yticklabels(names, fontsize=8)
    right.invert_yaxis()  # canonical order (noise first) from the top
    right.set_xlabel("top-1 accuracy (%), mean over severities")
    right.axvline(100 / result.data.num_classes, color="gray", linestyle=":", linewidth=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_adversarial(result: SweepResult, summary: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per attack: accuracy against the L-inf budget (0 = clean), methods side by side."""
    attacks = list(result.opts.attacks)
    fig = Figure(figsize=(5 * len(attacks), 4))
    axes = np.atleast_1d(fig.subplots(1, len(attacks), sharey=True))
    for ax, attack in zip(axes, attacks, strict=True):
        for k, model in enumerate(result.models):
            s = summary[model.label]
            curve = {0.0: s["clean"], **s["adversarial"][attack]}
            eps = sorted(curve)
            ax.plot(eps, _pct([curve[e] for e in eps]), marker="o", color=f"C{k % 10}", label=model.label)
        _chance(ax, result.data)
        steps = f", {result.opts.pgd_steps} steps" if attack == "pgd" else ""
        ax.set_title(f"{attack.upper()} (L-inf{steps})")
        ax.set_xlabel("budget eps (/255)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("top-1 accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_internal(result: SweepResult, summary: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per kind: accuracy against the internal corruption strength."""
    kinds = list(result.opts.internal_kinds)
    fig = Figure(figsize=(5 * len(kinds), 4))
    axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
    where = result.opts.internal_module or "final feature map"
    for ax, kind in zip(axes, kinds, strict=True):
        for k, model in enumerate(result.models):
            curve = summary[model.label]["internal"][kind]
            strengths = sorted(curve)
            ax.plot(strengths, _pct([curve[s] for s in strengths]), marker="o", color=f"C{k % 10}",
                    label=model.label)
        _chance(ax, result.data)
        ax.set_title(f"{kind} @ {where}")
        ax.set_xlabel("noise std / feature-map std" if kind == "noise" else "fraction of units zeroed")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("top-1 accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_large_crop(result: SweepResult, crop: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Accuracy against the pre-training c_min, one line per method (clean; mean corruption too)."""
    metrics = [("clean", "clean top-1 accuracy (%)")]
    if "corruption" in result.opts.sweeps:
        metrics.append(("mean_corruption_accuracy", "mean corruption top-1 accuracy (%)"))
    fig = Figure(figsize=(5 * len(metrics), 4))
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    single = all(len({r["c_min"] for r in rows}) == 1 for rows in crop.values())
    for ax, (metric, ylabel) in zip(axes, metrics, strict=True):
        if single:
            ax.set_title("one c_min per method: no trend to read", fontsize=9)
        for k, (method, rows) in enumerate(crop.items()):
            by_c: dict[float, list[float]] = defaultdict(list)
            for row in rows:
                by_c[row["c_min"]].append(row[metric])
            c_values = sorted(by_c)
            # checkpoints of one method at the same c_min are averaged; each one is shown as a dot
            ax.plot(c_values, _pct([_mean(by_c[c]) for c in c_values]), marker="o", color=f"C{k % 10}", label=method)
            ax.scatter([r["c_min"] for r in rows], _pct([r[metric] for r in rows]), color=f"C{k % 10}", s=12)
        _chance(ax, result.data)
        ax.set_xlim(0, 1)  # c_min lives in (0, 1]; a fixed axis keeps reports comparable
        ax.set_xlabel("pre-training minimum crop scale c_min")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------
# The document: one list of blocks, rendered as Markdown or HTML
# --------------------------------------------------------------------------------------------


class _Doc:
    """Headings, paragraphs (with `code`, **bold** and [links](x)), tables and images."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", ([str(h) for h in header], [[_cell(v) for v in row] for row in rows])))

    def image(self, filename: str, alt: str) -> None:
        self.blocks.append(("image", (filename, alt)))

    def markdown(self) -> str:
        parts = []
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"{'#' * value[0]} {value[1]}")
            elif kind == "para":
                parts.append(value)
            elif kind == "table":
                header, rows = value
                esc = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
                lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
                lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
                parts.append("\n".join(lines))
            else:
                parts.append(f"![{value[1]}]({value[0]})")
        return "\n\n".join(parts) + "\n"

    def html(self, folder: Path) -> str:
        body = []
        for kind, value in self.blocks:
            if kind == "heading":
                body.append(f"<h{value[0]}>{_inline(value[1])}</h{value[0]}>")
            elif kind == "para":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            else:
                # embedded, so that the report is one file that can be mailed or attached
                data = base64.b64encode((folder / value[0]).read_bytes()).decode()
                body.append(f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(value[1])}"></p>')
        style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
                 "text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
                 "img{max-width:100%}code{background:#f4f4f4;padding:0 3px}")
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Robustness report</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """The few Markdown inline forms the report uses, as HTML."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _pct1(value: float | None) -> float | None:
    return None if value is None else 100 * value


# --------------------------------------------------------------------------------------------
# Writing everything
# --------------------------------------------------------------------------------------------


def write_raw(result: SweepResult, summary: dict[str, Any], crop: dict[str, Any], out: Path,
              command: Sequence[str]) -> None:
    """``robustness.json`` (everything) and ``robustness.csv`` (the cells, long format)."""
    data, opts = result.data, result.opts
    payload = {
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "command": list(command),
        "accuracy_unit": "fraction in [0, 1], top-1 of frozen encoder + mean pooling + linear probe, eval mode",
        "evaluation": {"description": data.description, "n_images": len(data.labels), "split_size": data.split_size,
                       "indices": data.indices, "resolution": list(data.images.shape[-2:]),
                       "num_classes": data.num_classes, "skipped_unreadable": data.skipped,
                       "fingerprint": data.fingerprint},
        "options": {"sweeps": list(opts.sweeps), "corruptions": list(opts.corruptions),
                    "severities": list(opts.severities), "eps_255": list(opts.eps_255), "attacks": list(opts.attacks),
                    "pgd_steps": opts.pgd_steps, "pgd_alpha": "2.5 * eps / steps", "pgd_random_start": True,
                    "internal_kinds": list(opts.internal_kinds),
                    "internal_strengths": {k: list(opts.strengths(k)) for k in opts.internal_kinds},
                    "internal_module": opts.internal_module, "seed": opts.seed, "min_size": opts.min_size},
        "checkpoints": [{"label": m.label, "path": str(m.path), "method": m.method, "c_min": m.c_min,
                         "resolution": m.resolution, "epoch": m.pretrained.epoch, "probe": m.probe_source,
                         "fingerprint": m.fingerprint} for m in result.models],
        "summary": summary,
        "large_crop": crop,
        "cells": result.records,
        "run": {"computed": result.computed, "reused": result.reused, "seconds": round(result.seconds, 2)},
    }
    atomic_write_text(out / "robustness.json", json.dumps(payload, indent=2, default=str) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rec in result.records:
        writer.writerow({k: ("" if rec.get(k) is None else rec[k]) for k in CSV_COLUMNS})
    atomic_write_text(out / "robustness.csv", buffer.getvalue())


def write_report(result: SweepResult, out: Path, fmt: str = "md", command: Sequence[str] = (PROG,)) -> Path:
    """Plots, raw numbers and ``report.md`` / ``report.html`` in ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    crop = large_crop(result, summary)
    write_raw(result, summary, crop, out, command)
    models, data, opts = result.models, result.data, result.opts
    labels = [m.label for m in models]
    doc = _Doc()
    doc.heading(1, "Robustness report")
    doc.para(
        f"Generated by `{PROG}` on {dt.datetime.now():%Y-%m-%d %H:%M}. Evaluation set: {data.description}, "
        f"{len(data.labels)} of {data.split_size} images"
        + (f" (a fixed random subset, seed {opts.seed})" if data.indices is not None else "")
        + f", {data.images.shape[-1]} px, {data.num_classes} classes"
        + (f"; {data.skipped} unreadable images skipped" if data.skipped else "")
        + ". Every number is the **top-1 accuracy (%)** of the checkpoint's frozen encoder + global mean "
        "pooling + linear probe, in eval mode, on images in [0, 1] pixel space (normalisation inside the model). "
        f"Cells computed in this run: {result.computed}; reused from an earlier run: {result.reused}."
    )
    doc.heading(2, "Checkpoints")
    doc.table(["label", "method", "checkpoint", "epoch", "pre-training c_min", "resolution", "linear probe"],
              [[m.label, m.method, str(m.path), m.pretrained.epoch, f"{m.c_min:g}", m.resolution, m.probe_source]
               for m in models])

    doc.heading(2, "Clean accuracy")
    header = ["label", "clean top-1"]
    if "corruption" in opts.sweeps:
        header += ["mean corruption top-1", "relative drop from clean (%)"]
    rows = []
    for label in labels:
        s = summary[label]
        row: list[Any] = [label, _pct1(s["clean"])]
        if "corruption" in opts.sweeps:
            row += [_pct1(s["mean_corruption_accuracy"]), _pct1(s["relative_drop"])]
        rows.append(row)
    doc.table(header, rows)

    if "corruption" in opts.sweeps:
        plot_corruptions(result, summary, out / "corruption.png")
        doc.heading(2, "Common corruptions (imagecorruptions)")
        small = data.images.shape[-1] < opts.min_size
        doc.para(
            f"{len(opts.corruptions)} corruptions at severities {', '.join(map(str, opts.severities))} "
            f"(seed {opts.seed}; the same corrupted images for every checkpoint). Mean corruption accuracy: the mean "
            "over all swept corruptions and severities; relative drop: (clean - mean) / clean."
            + (f" The images are smaller than {opts.min_size} px: each is upsampled by an integer factor, corrupted "
               "and averaged back (see `cossl_analysis.corruptions`), so pixel noise is weaker than at native size."
               if small else "")
        )
        doc.image("corruption.png", "accuracy against corruption severity")
        doc.heading(3, "Mean over corruptions, per severity")
        doc.table(["severity", *labels],
                  [["clean", *[_pct1(summary[lab]["clean"]) for lab in labels]]]
                  + [[s, *[_pct1(summary[lab]["corruption_by_severity"][s]) for lab in labels]]
                     for s in opts.severities])
        doc.heading(3, "Per corruption, mean over severities")
        doc.table(["corruption", *labels],
                  [[name, *[_pct1(summary[lab]["corruption_by_name"][name]) for lab in labels]]
                   for name in opts.corruptions]
                  + [["mean of all", *[_pct1(summary[lab]["mean_corruption_accuracy"]) for lab in labels]]])
        for label in labels:
            doc.heading(3, f"Per corruption and severity: {label}")
            corr = summary[label]["corruption"]
            doc.table(["corruption", *[f"s{s}" for s in opts.severities], "mean"],
                      [[name, *[_pct1(corr[name][s]) for s in opts.severities],
                        _pct1(summary[label]["corruption_by_name"][name])] for name in opts.corruptions])

    if "adversarial" in opts.sweeps:
        plot_adversarial(result, summary, out / "adversarial.png")
        doc.heading(2, "Adversarial attacks (torchattacks, L-inf)")
        doc.para(
            "Budgets eps in /255 units of pixel values: the attacked model is encoder (with its normalisation) + "
            f"pooling + probe, fed [0, 1] images. {', '.join(a.upper() for a in opts.attacks)}; PGD: "
            f"{opts.pgd_steps} steps of 2.5 eps / steps from a random start (seed {opts.seed}). eps = 0 is the "
            "clean accuracy."
        )
        doc.image("adversarial.png", "accuracy against the adversarial budget")
        doc.table(["attack", "eps (/255)", *labels],
                  [[attack.upper(), f"{eps:g}", *[_pct1(summary[lab]["adversarial"][attack][eps]) for lab in labels]]
                   for attack in opts.attacks for eps in opts.eps_255])

    if "internal" in opts.sweeps:
        plot_internal(result, summary, out / "internal.png")
        where = f"`{opts.internal_module}`" if opts.internal_module else "the final feature map (before pooling)"
        doc.heading(2, "Internal corruption")
        doc.para(
            f"The output of {where} is corrupted at test time (`cossl_analysis.internal_corruption`): noise adds "
            "s x (per-sample feature std) x N(0, 1); zero sets each unit to 0 with probability s. The same random "
            f"draws (seed {opts.seed}) for every strength and checkpoint."
        )
        doc.image("internal.png", "accuracy against internal corruption strength")
        doc.table(["kind", "strength", *labels],
                  [[kind, f"{s:g}", *[_pct1(summary[lab]["internal"][kind][float(s)]) for lab in labels]]
                   for kind in opts.internal_kinds for s in opts.strengths(kind)])

    plot_large_crop(result, crop, out / "large_crop.png")
    doc.heading(2, "Large-crop study")
    single = {method: rows[0]["c_min"] for method, rows in crop.items() if len({r["c_min"] for r in rows}) == 1}
    text = ("Accuracy against the minimum crop scale `augment.c_min` each checkpoint was pre-trained with "
            "(read from its config); larger c_min means larger, easier training crops (the paper sweeps 0.1, "
            "0.2, 0.3, 0.4, 0.7).")
    if len(single) == len(crop):
        text += (" **Each method has checkpoints at a single c_min** ("
                 + ", ".join(f"{method}: {c:g}" for method, c in single.items())
                 + "), so there is no trend to read here; pass checkpoints pre-trained with several "
                 "`augment.c_min` values to see one.")
    elif single:
        text += " Methods with a single c_min: " + ", ".join(f"{m} ({c:g})" for m, c in single.items()) + "."
    doc.para(text)
    doc.image("large_crop.png", "accuracy against pre-training c_min")
    doc.table(["method", "c_min", "checkpoint", "clean top-1", "mean corruption top-1"],
              [[method, f"{r['c_min']:g}", r["label"], _pct1(r["clean"]), _pct1(r["mean_corruption_accuracy"])]
               for method, rows in crop.items() for r in rows])

    doc.heading(2, "Raw numbers")
    doc.para(
        "[robustness.json](robustness.json): settings, checkpoints, summaries and every cell; "
        "[robustness.csv](robustness.csv): one row per cell (checkpoint, label, method, c_min, sweep, setting, "
        "severity / eps_255 / strength, accuracy as a fraction, n_images); `cells.json`: the resume store "
        f"(rerun `{PROG}` with the same `--out` to add or finish cells without recomputing the others)."
    )
    report = out / f"report.{fmt}"
    atomic_write_text(report, doc.html(out) if fmt == "html" else doc.markdown())
    return report


if __name__ == "__main__":
    sys.exit(main())
