"""The throughput benchmark runs the trainer's own step and reports ratios measured in one run
(numbers are not asserted: speed is for the benchmark to print, not for tests to time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cossl_train import step
from cossl_train.cli import load_benchmark

bench = load_benchmark("train_throughput")


def test_bench_times_the_trainers_step_in_both_precisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []
    real = step.train_step

    def spy(parts, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(f"{parts.cfg.method.name}@{parts.rt.precision}")
        return real(parts, *args, **kw)

    monkeypatch.setattr(bench, "train_step", spy)
    out = tmp_path / "bench.json"
    argv = ["--methods", "byol,co_byol", "--width", "4", "--resolution", "16", "--batch-size", "8", "--steps", "2",
            "--warmup", "1", "--rounds", "2", "--precision", "both", "--workers", "0", "--loader-batches", "2",
            "--no-progress", "--json", str(out), "head.proj_hidden=32", "head.pred_hidden=32", "co.proj_hidden=16",
            "co.pred_hidden=16"]
    assert bench.main(argv) == 0
    record = json.loads(out.read_text())
    keys = {"byol@fp32", "co_byol@fp32", "byol@bf16", "co_byol@bf16"}
    assert set(record["methods"]) == keys
    assert set(record["ratios"]) == {"co_byol@fp32/byol@fp32", "co_byol@bf16/byol@bf16", "byol@bf16/byol@fp32",
                                     "co_byol@bf16/co_byol@fp32"}
    for name, r in record["methods"].items():
        assert r["images_per_s"] > 0 and r["step_ms_median"] > 0, name
    # every timed step went through the trainer's train_step: 1 warm-up + 2 timed per entry
    assert sorted(calls) == sorted([k for k in keys for _ in range(3)])
    assert "avx512" in record["settings"]["cpu_flags_bf16"].lower()  # says what the CPU offers
    assert "step-time ratios (same run)" in capsys.readouterr().out
