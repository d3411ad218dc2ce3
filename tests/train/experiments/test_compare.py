"""`cossl-train compare`: several seeds per method, mean and spread, finished work reused."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES

from cossl_train.experiments.compare import main

ARGS = ["--seeds", "2", "--methods", "byol,co_byol", "--no-progress", *TINY_OVERRIDES, "train.epochs=1",
        "train.max_steps_per_epoch=1", "data.limit=128", "train.batch_size=32", "eval.linear_epochs=3"]


def test_compare_reports_mean_and_std_over_seeds_and_reuses_runs(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["--out", str(out), *ARGS]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["encoder"], r["seed"]) for r in rows} == {(e, s) for e in ("random init", "byol", "co_byol")
                                                         for s in ("0", "1")}
    summary = json.loads((out / "results.json").read_text())["summary"]
    for enc in ("random init", "byol", "co_byol"):
        vals = [float(r["knn_top1"]) for r in rows if r["encoder"] == enc]
        assert summary[enc]["knn_top1"]["mean"] == pytest.approx(statistics.fmean(vals))
        assert summary[enc]["knn_top1"]["std"] == pytest.approx(statistics.stdev(vals))
    # the paired difference from the first method, in the table
    d = [float(a["linear_top1"]) - float(b["linear_top1"]) for a, b in zip(
        [r for r in rows if r["encoder"] == "co_byol"], [r for r in rows if r["encoder"] == "byol"], strict=True)]
    table = (out / "results.md").read_text()
    assert f"{statistics.fmean(d):+.2f} ± {statistics.stdev(d):.2f}" in table.splitlines()[-1]
    # seeds are real: the two runs of a method have different weights
    a, b = (out / "byol" / f"seed{s}" / "checkpoint.pt" for s in (0, 1))
    assert a.read_bytes() != b.read_bytes()

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/*") if p.suffix in (".pt", ".json")}
    capsys.readouterr()
    assert main(["--out", str(out), *ARGS]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained or re-evaluated
    assert (out / "results.md").read_text() == table


def test_compare_refuses_unknown_methods(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--methods", "byol,co_swav", *ARGS[4:]]) == 2
    assert "co_swav" in capsys.readouterr().err
