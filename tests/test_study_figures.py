"""docs/figures/study.py, the script behind docs/findings.md's study: every kept and final
checkpoint of a compare folder measured, its numbers traced back to the run's own files."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES

from cossl_train.experiments.compare import main as compare

REPO = Path(__file__).resolve().parents[1]


def _study_module(monkeypatch: pytest.MonkeyPatch, out: Path):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("study", REPO / "docs" / "figures" / "study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", out)  # its files go here, not beside the committed ones
    monkeypatch.setattr(module, "IMAGES", 32)
    return module


def test_study_measures_every_kept_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cell"
    assert compare(["--out", str(folder), "--seeds", "1", "--methods", "simclr,co_simclr", "--no-progress",
                    *TINY_OVERRIDES, "train.epochs=2", "train.keep_epochs=[1]", "train.max_steps_per_epoch=2",
                    "data.limit=128", "train.batch_size=32", "eval.linear_epochs=3"]) == 0
    study = _study_module(monkeypatch, tmp_path / "figures")
    (tmp_path / "figures").mkdir()
    study.main([f"tiny={folder}"])

    rows = list(csv.DictReader(open(tmp_path / "figures" / "study.csv")))
    assert sorted((r["method"], int(r["epoch"])) for r in rows) == [("co_simclr", 1), ("co_simclr", 2),
                                                                     ("simclr", 1), ("simclr", 2)]
    for r in rows:
        run = folder / r["method"] / "seed0"
        history = list(csv.DictReader(open(run / "epochs.csv")))
        epoch = history[int(r["epoch"]) - 1]
        assert float(r["loss_local"]) == pytest.approx(float(epoch["loss_local"]))  # that epoch's, not the last
        rates = sorted(float(h["images_per_s"]) for h in history[: int(r["epoch"])])
        median = rates[len(rates) // 2] if len(rates) % 2 else (rates[0] + rates[1]) / 2
        assert float(r["images_per_s"]) == pytest.approx(median)
        assert float(r["train_seconds"]) == pytest.approx(int(r["epoch"]) * 2 * 32 / median)
        assert float(r["local_chance"]) == pytest.approx(math.log(32))  # an InfoNCE local loss over 32
        assert 0 <= float(r["retrieval"]) <= 100 and 0 <= float(r["global_retrieval"]) <= 100
        kept = run / "epoch001" if r["epoch"] == "1" else run
        assert json.loads((kept / "eval.json").read_text())["linear_top1"] == pytest.approx(float(r["linear_top1"]))
        assert json.loads((kept / "study.json").read_text())["values"]["retrieval"] == pytest.approx(
            float(r["retrieval"]))
    table = (tmp_path / "figures" / "study_summary.md").read_text()
    assert [line.split(" | ")[1] for line in table.splitlines()[2:]] == ["1", "2"]  # one row per epoch
    assert (tmp_path / "figures" / "study_budget.png").stat().st_size > 10_000

    # a second call reads every stored measurement back (its stamp matches) and writes the same table
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("study.json")}
    study.main([f"tiny={folder}"])
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("study.json")} == stamps
    assert (tmp_path / "figures" / "study_summary.md").read_text() == table

    # a run without its summary.json (still training, or stopped) gives only the epochs it kept
    (folder / "co_simclr" / "seed0" / "summary.json").unlink()
    study.main([f"tiny={folder}"])
    rows = list(csv.DictReader(open(tmp_path / "figures" / "study.csv")))
    assert sorted((r["method"], int(r["epoch"])) for r in rows) == [("co_simclr", 1), ("simclr", 1), ("simclr", 2)]

    # the CSV collects cells: another cell's call keeps these rows as they were written (numbers read
    # back exactly), and naming a cell again replaces its rows instead of adding to them
    before = (tmp_path / "figures" / "study.csv").read_text().splitlines()
    study.main([f"again={folder}"])
    after = (tmp_path / "figures" / "study.csv").read_text().splitlines()
    assert after[: len(before)] == before
    assert [line.split(",")[0] for line in after[len(before):]] == ["again"] * 3
    study.main([f"tiny={folder}"])
    rows = list(csv.DictReader(open(tmp_path / "figures" / "study.csv")))
    assert sorted(r["cell"] for r in rows) == ["again"] * 3 + ["tiny"] * 3
    table = (tmp_path / "figures" / "study_summary.md").read_text()
    assert {line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[2:]} == {"again", "tiny"}
