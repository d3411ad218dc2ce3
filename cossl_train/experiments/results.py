"""The grid's results table: one row per evaluated run, written by ``grid`` and read by the
Figure 3A/5 plots (``cossl_analysis.viz.results``); the schema is :class:`ResultRow`."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text

#: accuracy columns of the table and their axis labels
METRICS: dict[str, str] = {
    "linear_top1": "linear probe top-1 (%)",
    "linear_top5": "linear probe top-5 (%)",
    "knn_top1": "kNN top-1 (%)",
}


@dataclass(frozen=True)
class ResultRow:
    """One evaluated pre-training run (accuracies in %, NaN when missing)."""

    method: str
    backbone: str
    rf: int
    c_min: float
    epochs: int
    linear_top1: float
    linear_top5: float
    knn_top1: float
    checkpoint: str

    def metric(self, name: str) -> float:
        """The accuracy column ``name`` (one of :data:`METRICS`)."""
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; one of {', '.join(METRICS)}")
        return float(getattr(self, name))


#: columns of the table, in order
CSV_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ResultRow))


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """The table at ``path`` (written atomically), one row per mapping of :data:`CSV_COLUMNS`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _float(text: str) -> float:
    # an empty cell (a metric that was not computed) reads as NaN and is left out of the plots
    return float(text) if text.strip() else math.nan


def read_results(path: str | Path) -> list[ResultRow]:
    """The rows of a results table; ValueError (naming the file) for a missing column, a cell that
    does not parse, or a table without rows."""
    path = Path(path)
    casts = {"rf": int, "c_min": float, "epochs": int, "linear_top1": _float, "linear_top5": _float,
             "knn_top1": _float}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a grid results table, missing column(s) {', '.join(missing)}")
        rows = []
        for line, rec in enumerate(reader, start=2):
            try:
                rows.append(ResultRow(**{c: casts.get(c, str)(rec[c]) for c in CSV_COLUMNS}))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {line}: {e}") from None
    if not rows:
        raise ValueError(f"{path}: the results table has no rows (no evaluated cell yet)")
    return rows


def grid_method(rows: Sequence[ResultRow]) -> str:
    """The CO method with the most rows (the base-method rows are the references), or the most
    frequent method when there is no CO method; ties go to the name that sorts first."""
    counts = Counter(r.method for r in rows)
    pool = {m: n for m, n in counts.items() if m.startswith("co_")} or counts
    return min(pool, key=lambda m: (-pool[m], m))


def split_results(rows: Sequence[ResultRow], method: str | None = None) -> tuple[list[ResultRow], list[ResultRow]]:
    """(rows of ``method``, default :func:`grid_method`; reference rows of every other method)."""
    method = method or grid_method(rows)
    grid = [r for r in rows if r.method == method]
    if not grid:
        raise ValueError(f"no row of method {method!r}; the table has {', '.join(sorted({r.method for r in rows}))}")
    return grid, [r for r in rows if r.method != method]


def group_means(rows: Sequence[ResultRow], metric: str, key: str) -> dict[tuple[Any, float], tuple[float, int]]:
    """Mean ``metric`` and its row count per (``key`` value, c_min): repeated runs (seeds) average;
    NaN values are left out, and a group with none left is dropped."""
    groups: dict[tuple[Any, float], list[float]] = defaultdict(list)
    for r in rows:
        v = r.metric(metric)
        if not math.isnan(v):
            groups[(getattr(r, key), r.c_min)].append(v)
    return {k: (float(np.mean(v)), len(v)) for k, v in groups.items()}


def curve_rows(rows: Sequence[ResultRow], metric: str = "linear_top1",
               method: str | None = None) -> list[dict[str, Any]]:
    """The plotted points, one per (role, method, backbone, c_min): role ``grid`` or ``reference``,
    rf, the metric (mean over repeated runs) and ``n_runs``, sorted by role, c_min and rf."""
    grid, refs = split_results(rows, method)
    out = []
    for role, part in (("grid", grid), ("reference", refs)):
        rf_of = {(r.method, r.backbone): r.rf for r in part}
        for method_name in sorted({r.method for r in part}):
            mine = [r for r in part if r.method == method_name]
            for (backbone, c_min), (value, n) in group_means(mine, metric, "backbone").items():
                out.append({"role": role, "method": method_name, "backbone": backbone,
                            "rf": rf_of[(method_name, backbone)], "c_min": c_min, metric: value, "n_runs": n})
    out.sort(key=lambda d: (d["role"] != "grid", d["method"], d["c_min"], d["rf"], d["backbone"]))
    return out
