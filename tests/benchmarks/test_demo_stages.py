"""The demo-stages benchmark's arithmetic: the estimate is training FLOP over the other machine's
GFLOP/s per method plus its other stages, and the stage rows carry the demo's own split (the
benchmark itself runs the full demo, which tests/train/experiments/test_demo.py covers shrunk)."""

from __future__ import annotations

import pytest

from cossl_train.cli import load_benchmark

stages = load_benchmark("demo_stages")


def test_estimate_is_flop_over_rate_plus_the_other_stages() -> None:
    est = stages.estimate({"simclr": 10.47e9, "co_simclr": 12.74e9}, steps=368, seeds=3,
                          rates={"simclr": 42.0, "co_simclr": 46.0}, eval_s=13.3, report_s=46.0, startup=4.0,
                          n_evals=9)
    assert est["train simclr"] == pytest.approx(3 * 368 * 10.47 / 42)  # 275 s
    assert est["train co_simclr"] == pytest.approx(3 * 368 * 12.74 / 46)  # 306 s
    assert est["evaluations"] == pytest.approx(9 * 13.3)
    assert est["total"] == pytest.approx(est["train simclr"] + est["train co_simclr"] + 9 * 13.3 + 46 + 4)


def test_stage_rows_keep_the_demos_split() -> None:
    timings = {"stages": [{"what": "random init seed 0", "seconds": 5.0, "train_seconds": 0.0, "eval_seconds": 4.9},
                          {"what": "simclr seed 0", "seconds": 50.0, "train_seconds": 47.0, "eval_seconds": 2.5},
                          {"what": "report", "seconds": 30.0}]}
    rows = stages.stage_table(timings, startup=3.5)
    assert rows == [("start-up (imports, fresh process)", 3.5, 0.0, 0.0), ("random init seed 0", 5.0, 0.0, 4.9),
                    ("simclr seed 0", 50.0, 47.0, 2.5), ("report", 30.0, 0.0, 0.0)]
