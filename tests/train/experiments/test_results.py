"""The grid's results table (cossl_train.experiments.results): one schema, its writer and reader,
and the selections the Figure 3A/5 plots make from it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from conftest import RESULT_ROWS, result_row

from cossl_train.experiments.results import (
    CSV_COLUMNS,
    ResultRow,
    curve_rows,
    grid_method,
    read_results,
    split_results,
    write_csv,
)


def test_a_written_row_reads_back_as_the_schema(tmp_path: Path) -> None:
    row = ResultRow("co_byol", "resnet50", 427, 0.2, 3, 51.5, 80.25, 47.0, "/runs/c.pt")
    write_csv([dataclasses.asdict(row)], tmp_path / "r.csv")
    assert read_results(tmp_path / "r.csv") == [row]
    assert CSV_COLUMNS == tuple(dataclasses.asdict(row))


def test_read_results(results_table: Path) -> None:
    rows = read_results(results_table)
    assert len(rows) == len(RESULT_ROWS)
    first = rows[0]
    assert (first.method, first.backbone, first.rf, first.c_min) == ("co_byol", "rf_resnet50_rf43", 43, 0.2)
    assert first.metric("linear_top1") == pytest.approx(RESULT_ROWS[0]["linear_top1"])
    with pytest.raises(ValueError, match="unknown metric"):
        first.metric("accuracy")


def test_read_results_refuses_bad_tables(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("method,backbone,rf\nco_byol,resnet50,427\n")
    with pytest.raises(ValueError, match="missing column.*c_min"):
        read_results(bad)
    empty = tmp_path / "empty.csv"
    write_csv([], empty)
    with pytest.raises(ValueError, match="no rows"):
        read_results(empty)
    garbled = tmp_path / "garbled.csv"
    write_csv([{**result_row("co_byol", "resnet50", 427, 0.2, 50.0), "rf": "big"}], garbled)
    with pytest.raises(ValueError, match="line 2"):
        read_results(garbled)
    with pytest.raises(FileNotFoundError):
        read_results(tmp_path / "missing.csv")


def test_missing_metric_reads_as_nan_and_is_not_plotted(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    write_csv([*RESULT_ROWS, result_row("co_byol", "rf_resnet50_rf67", 67, 0.2, 1.0, knn_top1="")], path)
    rows = read_results(path)
    assert math.isnan(rows[-1].knn_top1)
    points = curve_rows(rows, metric="knn_top1")
    assert all(p["backbone"] != "rf_resnet50_rf67" for p in points)
    assert any(p["backbone"] == "rf_resnet50_rf67" for p in curve_rows(rows, metric="linear_top1"))


def test_grid_method_and_split(results_table: Path) -> None:
    rows = read_results(results_table)
    assert grid_method(rows) == "co_byol"
    grid_rows, refs = split_results(rows)
    assert len(grid_rows) == 6 and {r.method for r in refs} == {"byol"}
    # Without a CO method, the most frequent method makes the curves (and the others are references).
    byol = [r for r in rows if r.method == "byol"]
    simclr = ResultRow(**{**byol[0].__dict__, "method": "simclr"})
    assert grid_method([simclr, *byol]) == "byol"
    with pytest.raises(ValueError, match="no row of method 'simclr'"):
        split_results(rows, "simclr")


def test_curve_rows_average_repeated_runs(results_table: Path) -> None:
    rows = read_results(results_table)
    again = [*rows, ResultRow(**{**rows[0].__dict__, "linear_top1": rows[0].linear_top1 + 2.0})]
    points = curve_rows(again)
    assert len(points) == len(RESULT_ROWS)  # the repeated cell is one point
    first = next(p for p in points if p["backbone"] == "rf_resnet50_rf43" and p["c_min"] == 0.2)
    assert first["n_runs"] == 2
    assert first["linear_top1"] == pytest.approx(rows[0].linear_top1 + 1.0)
    assert [p["role"] for p in points] == ["grid"] * 6 + ["reference"] * 2
    grid_points = [p for p in points if p["role"] == "grid"]
    assert grid_points == sorted(grid_points, key=lambda p: (p["c_min"], p["rf"]))
