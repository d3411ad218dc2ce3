"""The start-up benchmark runs and prints a time for every case it promises (times are not asserted)."""

from __future__ import annotations

import pytest

from cossl_train.cli import load_benchmark


def test_cli_startup_prints_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("cli_startup")
    bench.main(["--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.rsplit(": ", 1)[0] for line in lines] == [what for what, _ in bench.CASES]
    assert all(line.endswith("s)") and " s (median of 1" in line for line in lines)
