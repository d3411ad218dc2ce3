"""Numbers and figures of docs/findings.md, "Looking for the term": every kept and final checkpoint
of the study's `cossl-train compare` folders, measured the same way.

    python docs/figures/study.py CELL=FOLDER [CELL=FOLDER ...]

A FOLDER is a `compare` output (run folders ``[combination/]method/seedK``, each with the
checkpoints that ``train.keep_epochs`` kept in ``epochNNN/``); CELL names it in the tables (a sweep's
combination is appended). For every checkpoint: the fast linear probe and weighted kNN on the
held-out split (``eval.json`` beside it, reused while current), the last epoch's local and global
training loss (``epochs.csv``), and the CO objective on 256 held-out images against a second,
training-augmented view (the report's ``co-objective`` computation and views; a base model is
read through its global heads at every position: the floor). Results are stored beside each
checkpoint (``study.json``) and reused. Writes ``study.csv`` (one row per cell, method, seed and
epoch), ``study_summary.md`` (per cell and epoch: mean ± std over seeds, CO minus base paired by
seed) and ``study_budget.png`` beside this file.

The CSV collects cells across calls: the rows of every CELL named are measured again from its
FOLDER and replace that cell's rows; the rows of cells not named stay as an earlier call measured
them (their run folders need not be on this machine). The table and the figure are drawn from the
whole CSV.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
#: images of the CO objective (the demo's report setting) and the seed of their subset and second view
IMAGES, SEED = 256, 0
#: the local loss this far below its chance value is the first half of "the term is met" (the
#: second: local retrieval above the base method's floor in every seed, resolved by the seeds)
MET_NATS = 0.5
#: bump when what a study.json holds changes
VERSION = 2
COLUMNS = ["cell", "method", "seed", "epoch", "epochs", "linear_top1", "knn_top1", "loss_local", "loss_global",
           "local_chance", "retrieval", "own_cosine", "other_cosine", "global_retrieval", "images_per_s",
           "train_seconds", "path"]
#: base methods whose local loss is an InfoNCE over the batch: its chance value is ln(batch size)
INFONCE = ("simclr", "mocov3")
INTEGERS = ("seed", "epoch", "epochs")
TEXT = ("cell", "method", "path")


def run_folders(folder: Path) -> list[Path]:
    """Every run folder (one holding checkpoint.pt and a method/seed layout) under ``folder``."""
    return sorted(p.parent for p in folder.rglob("seed*/checkpoint.pt"))


def checkpoints(run: Path) -> list[Path]:
    """The kept checkpoints of a run (epochNNN/) and, once it has finished (its summary.json is
    written at the end), its final one, in epoch order. A run still training, or stopped, gives
    the epochs it has kept: each is final for that epoch."""
    final = [run / "checkpoint.pt"] if (run / "summary.json").is_file() else []
    return [*sorted(run.glob("epoch[0-9][0-9][0-9]/checkpoint.pt")), *final]


def _views(cfg: Any, cache: dict) -> tuple[Any, Any]:
    """(view a, view b) of the held-out images at the config's resolution, made once per setting."""
    from cossl_analysis.report.co_objective import second_view
    from cossl_analysis.report.loading import load_eval_set
    from cossl_train.evaluate import pixels

    key = json.dumps({"data": cfg.data.__dict__, "augment": cfg.augment.__dict__}, sort_keys=True, default=str)
    if key not in cache:
        data = load_eval_set(cfg, IMAGES, seed=SEED, progress=False)
        cache[key] = (pixels(data.images), second_view(data.images, cfg.augment, SEED))
    return cache[key]


def _epoch_rows(run: Path, epoch: int) -> list[dict[str, str]]:
    """epochs.csv's rows of epochs 1..epoch (the last one written for each epoch: a resumed run
    may have logged an epoch twice)."""
    with open(run / "epochs.csv") as f:
        rows = {int(float(r["epoch"])): r for r in csv.DictReader(f)}
    return [rows[e] for e in sorted(rows) if e <= epoch]


def _cost(rows: list[dict[str, str]], images_per_epoch: int) -> tuple[float, float]:
    """(median training images/s over the epochs, training seconds to the last one at that median
    rate): the median keeps the cost of this cell free of the epochs another job slowed down."""
    import statistics

    rate = statistics.median(float(r["images_per_s"]) for r in rows)
    return rate, len(rows) * images_per_epoch / rate


def measure(ckpt: Path, run: Path, views: dict) -> dict[str, Any]:
    """The study's numbers for one checkpoint (stored in study.json beside it)."""
    from cossl_analysis.analyses.co_objective import co_objective
    from cossl_train.checkpoint import file_stamp, load_checkpoint, load_method
    from cossl_train.config import from_dict
    from cossl_train.experiments.runs import ensure_evaluated

    store = ckpt.parent / "study.json"
    stamp = {"version": VERSION, "images": IMAGES, "seed": SEED, **file_stamp(ckpt)}
    if store.is_file():
        stored = json.loads(store.read_text())
        if stored.get("stamp") == stamp:
            return stored["values"]
    state = load_checkpoint(ckpt)
    cfg = from_dict(state["config"])
    evaluation = ensure_evaluated(ckpt, cfg, progress=False)
    a, b = _views(cfg, views)
    objective = co_objective(load_method(ckpt), a, b)
    epoch = int(state["epoch"])
    history = _epoch_rows(run, epoch)
    losses = history[-1] if history else {}
    base = cfg.method.name.removeprefix("co_")
    steps = int(state["global_step"]) // max(epoch, 1)
    rate, seconds = _cost(history, steps * cfg.train.batch_size * cfg.train.accum_steps)
    values = {"method": cfg.method.name, "seed": cfg.train.seed, "epoch": epoch, "epochs": cfg.train.epochs,
              "linear_top1": evaluation["linear_top1"], "knn_top1": evaluation["knn_top1"],
              "loss_local": float(losses["loss_local"]) if losses.get("loss_local") else None,
              "loss_global": float(losses["loss_global"]) if losses.get("loss_global") else None,
              "local_chance": math.log(cfg.train.batch_size) if base in INFONCE else None,
              "retrieval": 100 * objective.retrieval, "own_cosine": objective.own_cosine,
              "other_cosine": objective.other_cosine, "global_retrieval": 100 * objective.global_retrieval,
              "images_per_s": rate, "train_seconds": seconds, "path": objective.path}
    store.write_text(json.dumps({"stamp": stamp, "values": values}, indent=1))
    return values


def collect(cells: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    views: dict = {}
    rows = []
    for name, folder in cells:
        for run in run_folders(folder):
            combo = run.parent.parent.relative_to(folder).as_posix()
            cell = name if combo in ("", ".") else f"{name}, {combo.replace('__', ', ')}"
            for ckpt in checkpoints(run):
                rows.append({"cell": cell, **measure(ckpt, run, views)})
                print(f"{cell} {rows[-1]['method']} seed {rows[-1]['seed']} epoch {rows[-1]['epoch']}: "
                      f"retrieval {rows[-1]['retrieval']:.2f} %", flush=True)
    return rows


def earlier_rows(path: Path, names: set[str]) -> list[dict[str, Any]]:
    """The rows of ``path`` (an earlier call's study.csv) whose cell is not one of ``names`` (a sweep's
    cell "NAME, key=value" belongs to NAME), with their numbers read back; none when it is absent."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["cell"].split(", ")[0] not in names]

    def value(key: str, text: str) -> Any:
        if key in TEXT:
            return text
        if text == "":
            return None
        return int(text) if key in INTEGERS else float(text)

    return [{k: value(k, r[k]) for k in COLUMNS} for r in rows]


def _pm(values: list[float], digits: int = 2) -> str:
    from cossl_train.paired import mean_std_text

    return mean_std_text(values, digits)


def summary(rows: list[dict[str, Any]]) -> str:
    """Per cell and epoch: the base method and its CO form over seeds, and CO - base paired by seed."""
    from cossl_train.paired import paired

    lines = ["| cell | epoch | seeds | base linear / kNN (%) | local loss below chance (nats) | local retrieval (%) "
             "CO / base floor | CO - floor (points) | global retrieval (%) CO / base | linear CO - base | "
             "kNN CO - base | CO training to this epoch (s) |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["cell"], r["epoch"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for cell, epoch in keys:
        here = [r for r in rows if r["cell"] == cell and r["epoch"] == epoch]
        co = {r["seed"]: r for r in here if r["method"].startswith("co_")}
        base = {r["seed"]: r for r in here if not r["method"].startswith("co_")}
        seeds = sorted(set(co) & set(base))
        if not seeds:
            continue

        def diff(key: str, name: str, co: dict = co, base: dict = base, seeds: list = seeds) -> str:
            p = paired("CO", "base", name, [co[s][key] for s in seeds], [base[s][key] for s in seeds], " points")
            return p.summary(2) if len(seeds) > 1 else f"{p.mean:+.2f} (n = 1)"

        below = [co[s]["local_chance"] - co[s]["loss_local"] for s in seeds
                 if co[s]["loss_local"] is not None and co[s]["local_chance"] is not None]
        lines.append(
            f"| {cell} | {epoch} | {len(seeds)} | {_pm([base[s]['linear_top1'] for s in seeds])} / "
            f"{_pm([base[s]['knn_top1'] for s in seeds])} | {_pm(below, 3) if below else 'n/a'} | "
            f"{_pm([co[s]['retrieval'] for s in seeds], 1)} / {_pm([base[s]['retrieval'] for s in seeds], 1)} | "
            f"{diff('retrieval', 'local retrieval')} | {_pm([co[s]['global_retrieval'] for s in seeds], 1)} / "
            f"{_pm([base[s]['global_retrieval'] for s in seeds], 1)} | {diff('linear_top1', 'linear')} | "
            f"{diff('knn_top1', 'kNN')} | {_pm([co[s]['train_seconds'] for s in seeds], 0)} |")
    return "\n".join(lines) + "\n"


def _value(row: dict[str, Any], key: str) -> float | None:
    if key == "below":
        if row["loss_local"] is None or row["local_chance"] is None:
            return None
        return row["local_chance"] - row["loss_local"]
    return row[key]


def _differences(rows: list[dict[str, Any]], cell: str, key: str) -> list[tuple[int, float]]:
    """(epoch, CO - base) for every seed and epoch of ``cell`` that has both."""
    here = [r for r in rows if r["cell"] == cell]
    base = {(r["seed"], r["epoch"]): r[key] for r in here if not r["method"].startswith("co_")}
    return [(r["epoch"], r[key] - base[r["seed"], r["epoch"]]) for r in here
            if r["method"].startswith("co_") and (r["seed"], r["epoch"]) in base]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """The budget curves: per cell, against the epoch (log x), seed means with the seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys(r["cell"] for r in rows))
    # a kept checkpoint is not a shorter run: the legend says each cell's schedule
    labels = {c: f"{c} ({max(r['epochs'] for r in rows if r['cell'] == c)}-epoch runs)" for c in cells}
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.6))
    panels = [("local loss below chance (nats; InfoNCE forms)", "below", True),
              ("local retrieval (%): CO (solid), base floor (dashed)", "retrieval", False),
              ("global retrieval (%): CO (solid), base (dashed)", "global_retrieval", False),
              ("linear top-1: CO - base (points)", "linear_top1", None),
              ("kNN top-1: CO - base (points)", "knn_top1", None)]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, key, co_only) in zip(axes, panels, strict=True):
        for i, cell in enumerate(cells):
            colour = colours[i % len(colours)]
            if co_only is None:  # a paired difference per seed and epoch
                points = _differences(rows, cell, key)
                epochs = sorted({e for e, _ in points})
                ax.plot(epochs, [sum(d for e2, d in points if e2 == e) / sum(e2 == e for e2, _ in points)
                                 for e in epochs], "-", color=colour, marker="o", ms=3)
                ax.scatter([e for e, _ in points], [d for _, d in points], s=6, color=colour, alpha=0.5)
                ax.axhline(0, color="k", lw=0.6)
                continue
            for co, style in ((True, "-"), (False, "--")):
                if co_only and not co:
                    continue
                got = [r for r in rows if r["cell"] == cell and r["method"].startswith("co_") == co
                       and _value(r, key) is not None]
                epochs = sorted({r["epoch"] for r in got})
                if not epochs:
                    continue
                means = [sum(_value(r, key) for r in got if r["epoch"] == e) / sum(r["epoch"] == e for r in got)
                         for e in epochs]
                ax.plot(epochs, means, style, color=colour, marker="o", ms=3,
                        label=labels[cell] if co and key == "retrieval" else None)
                ax.scatter([r["epoch"] for r in got], [_value(r, key) for r in got], s=6, color=colour, alpha=0.5)
        ax.set_xscale("log")
        ticks = sorted({r["epoch"] for r in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("epoch (kept and final checkpoints; seeds as dots)")
        ax.set_title(title, fontsize=9)
    axes[0].axhline(MET_NATS, color="k", lw=0.8, ls=":", label=f"{MET_NATS} nats: the study's bar")
    axes[1].axhline(100 / IMAGES, color="k", lw=0.8, ls=":", label=f"chance (1/{IMAGES})")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.legend(*axes[1].get_legend_handles_labels(), fontsize=8, loc="center right")
    fig.tight_layout(rect=(0, 0, 0.87, 1))
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    cells = []
    for spec in argv:
        name, sep, folder = spec.partition("=")
        if not sep or not Path(folder).is_dir():
            raise SystemExit(f"study.py: {spec!r} is not CELL=FOLDER with an existing folder")
        cells.append((name, Path(folder)))
    rows = earlier_rows(HERE / "study.csv", {name for name, _ in cells}) + collect(cells)
    with open(HERE / "study.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows([{k: r.get(k) for k in COLUMNS} for r in rows])
    (HERE / "study_summary.md").write_text(summary(rows))
    plot(rows, HERE / "study_budget.png")
    print(re.sub(r"\n+$", "", summary(rows)))


if __name__ == "__main__":
    main(sys.argv[1:])
