"""The analysis benchmark runs end to end on a tiny setting and prints every timing it promises
(speed is for the benchmark to print, not for tests to assert)."""

from __future__ import annotations

import pytest

from cossl_train.cli import load_benchmark


def test_analysis_benchmark_prints_every_timing(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("analysis_speed")
    bench.main(["--size", "64", "--images", "1", "--small-images", "1", "--conv5-images", "1",
                "--positions-measured", "1", "--repeats", "1", "--analysis-images", "2", "--batch-size", "2"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "max |path - per-position|" in line]
    gaps = [float(line.rsplit("=", 1)[1]) for line in lines]
    assert len(gaps) == 3 and max(gaps) < 1e-5  # every ERF path gives the same maps
    assert all(f"{path} " in line for line in lines for path in ("batched", "looped", "auto"))
    assert "similarity (random mode), 2 images, 1 pairs" in out and "patch dropping (7 fractions" in out
