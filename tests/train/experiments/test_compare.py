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
    row = next(line for line in table.splitlines() if line.startswith("| co_byol |"))
    assert f"{statistics.fmean(d):+.2f} ± {statistics.stdev(d):.2f}" in row
    # and the same difference as a sentence, paired by seed
    assert f"linear top-1: co_byol - byol = {statistics.fmean(d):+.2f} ± {statistics.stdev(d):.2f} pt" in table
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


def test_sweep_expands_to_every_combination_checked_against_the_config() -> None:
    from cossl_train.config import load_config
    from cossl_train.experiments.compare import combo_dir, combo_label, parse_sweeps, run_dir

    base = load_config(None, TINY_OVERRIDES)
    combos = parse_sweeps(["co.local_weight=0.3,0.7", "co.shared_heads=false,true", "augment.blur_p=[0,0],[1,0.1]"],
                          base)
    assert len(combos) == 8
    assert combos[0] == (("co.local_weight", "0.3"), ("co.shared_heads", "false"), ("augment.blur_p", "[0,0]"))
    assert combos[-1] == (("co.local_weight", "0.7"), ("co.shared_heads", "true"), ("augment.blur_p", "[1,0.1]"))
    assert combo_label(combos[1]) == "co.local_weight=0.3, co.shared_heads=false, augment.blur_p=[1,0.1]"
    assert combo_dir(combos[1]) == "co.local_weight=0.3__co.shared_heads=false__augment.blur_p=_1,0.1_"
    out = Path("o")
    # a base method ignores the CO term's keys: one run serves every combination that differs only there
    assert run_dir(out, "byol", 1, combos[0]) == run_dir(out, "byol", 1, combos[6]) == \
        out / "augment.blur_p=_0,0_" / "byol" / "seed1"
    assert run_dir(out, "co_byol", 1, combos[0]) != run_dir(out, "co_byol", 1, combos[6])
    assert parse_sweeps([], base) == [()] and run_dir(out, "byol", 0) == out / "byol" / "seed0"


@pytest.mark.parametrize(("spec", "message"), [
    ("co.local_wieght=0.3,0.7", "co.local_wieght"),
    ("co.shared_heads=maybe", "co.shared_heads"),
    ("co.local_weight=2", "co.local_weight=2.0 must lie in"),
    ("train.seed=1,2", "set by the comparison itself"),
    ("co.local_weight", "is not of the form key=value1,value2"),
])
def test_a_bad_sweep_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str) -> None:
    assert main(["--out", str(tmp_path / "s"), "--sweep", spec, *ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cossl-train compare: error:") and "\n" not in err and message in err, err
    assert not (tmp_path / "s").exists()


def test_sweep_runs_pairs_within_each_combination_and_reuses_runs(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    args = ["--out", str(out), "--sweep", "co.local_weight=0.2,0.6", *ARGS]
    assert main(args) == 0
    # one base run per seed, shared by both combinations; a CO run per combination and seed
    assert sorted(p.parent.relative_to(out).as_posix() for p in out.glob("**/checkpoint.pt")) == sorted(
        [f"byol/seed{s}" for s in (0, 1)]
        + [f"co.local_weight={w}/co_byol/seed{s}" for w in ("0.2", "0.6") for s in (0, 1)])
    rows = list(csv.DictReader(open(out / "results.csv")))
    results = json.loads((out / "results.json").read_text())
    for w in ("0.2", "0.6"):
        combo = f"co.local_weight={w}"

        def vals(enc: str, metric: str, combo: str = combo) -> list[float]:
            return [float(r[metric]) for r in rows if r["combination"] == combo and r["encoder"] == enc]

        d = [a - b for a, b in zip(vals("co_byol", "knn_top1"), vals("byol", "knn_top1"), strict=True)]
        entry = next(p for p in results["paired"] if p["combination"] == {"co.local_weight": w}
                     and p["a"] == "co_byol" and p["metric"] == "kNN top-1")
        assert entry["b"] == "byol" and entry["diffs"] == pytest.approx(d)
        assert entry["mean"] == pytest.approx(statistics.fmean(d)) and entry["positive"] == sum(x > 0 for x in d)
    # the base rows of both combinations are the same runs
    assert [r["knn_top1"] for r in rows if r["encoder"] == "byol" and r["combination"].endswith("0.2")] == \
        [r["knn_top1"] for r in rows if r["encoder"] == "byol" and r["combination"].endswith("0.6")]
    table = (out / "results.md").read_text()
    assert "co.local_weight=0.6" in table and "Paired by seed" in table
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("**/*") if p.suffix in (".pt", ".json") and "seed" in str(p)}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained, re-evaluated or re-scored


def test_analysis_settings_expand_demo_and_later_settings_win() -> None:
    from cossl_analysis.config import load_analysis_config
    from cossl_train.experiments.compare import _analysis_settings
    from cossl_train.experiments.demo import REPORT_SETTINGS

    assert _analysis_settings(["demo"]) == load_analysis_config(REPORT_SETTINGS)
    assert _analysis_settings([]) == load_analysis_config(())
    cfg = _analysis_settings(["demo", "images=64"])
    assert cfg.images == 64 and cfg.images != load_analysis_config(REPORT_SETTINGS).images
    assert cfg.robustness.pgd_steps == load_analysis_config(REPORT_SETTINGS).robustness.pgd_steps


def test_a_bad_analysis_setting_is_one_line_before_any_training(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "a"), "--report", "--analysis", "nope=1", *ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cossl-train compare: error:") and "\n" not in err and "nope" in err, err
    assert not (tmp_path / "a").exists()


def test_one_seed_prints_no_spread() -> None:
    """A comparison of one seed per method shows each value alone, never "± 0.00", and says it cannot tell."""
    from cossl_train.experiments.compare import Comparison, format_paired, format_table

    scores = {((), m): {0: {"linear_top1": top1, "linear_top5": 90.0, "knn_top1": top1 - 5}}
              for m, top1 in (("byol", 50.0), ("co_byol", 52.5))}
    comp = Comparison(["byol", "co_byol"], [0], scores=scores, seconds={k: {0: 1.0} for k in scores})
    table = format_table(comp)
    assert "± 0.00" not in table and "52.50 (n = 1)" in table and "+2.50 (n = 1)" in table
    assert "+2.50 pt (n = 1; resolves nothing): cannot tell with one seed" in format_paired(comp)
