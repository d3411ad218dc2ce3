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
            "--loop-steps", "1", "--warmup", "1", "--rounds", "2", "--precision", "both", "--workers", "0",
            "--loader-batches", "2", "--no-progress", "--memory", "inline", "--json", str(out), "head.proj_hidden=32",
            "head.pred_hidden=32", "co.proj_hidden=16", "co.pred_hidden=16"]
    assert bench.main(argv) == 0
    record = json.loads(out.read_text())
    keys = {"byol@fp32", "co_byol@fp32", "byol@bf16", "co_byol@bf16"}
    assert set(record["methods"]) == keys
    assert set(record["ratios"]) == {"co_byol@fp32/byol@fp32", "co_byol@bf16/byol@bf16", "byol@bf16/byol@fp32",
                                     "co_byol@bf16/co_byol@fp32"}
    for name, r in record["methods"].items():
        assert r["images_per_s"] > 0 and r["step_ms_median"] > 0, name
        assert r["loop_images_per_s"] > 0 and r["loop_steps"] == 1 and r["loop_over_step"] > 0, name
        assert r["gflops_achieved"] == pytest.approx(r["flop_per_step"] / 1e9 / (r["step_ms_median"] / 1e3))
    # the FLOP counter sees the CO term's extra heads
    assert record["methods"]["co_byol@fp32"]["flop_per_step"] > record["methods"]["byol@fp32"]["flop_per_step"] > 0
    # every step went through the trainer's train_step: 1 warm-up, 1 counted, 1 warm-up of the loop,
    # 2 timed steps and 1 timed step of the loop per entry
    assert sorted(calls) == sorted([k for k in keys for _ in range(6)])
    assert "avx512" in record["settings"]["cpu_flags_bf16"].lower()  # says what the CPU offers
    peak = record["peak"]
    assert peak["fp32_gflops"] == pytest.approx(peak["cores"] * peak["ghz"] * peak["fp32_per_cycle"])
    printed = capsys.readouterr().out
    assert "step-time ratios (same run)" in printed and "loop/step" in printed and "GFLOP/s" in printed


def test_memory_read_in_a_fresh_process_per_method(tmp_path: Path) -> None:
    """--memory fresh (the default) replaces the in-process reading by one from a spawned process,
    which starts from its own baseline: what the method allocated, not what this process holds."""
    out = tmp_path / "bench.json"
    argv = ["--methods", "byol", "--width", "4", "--resolution", "16", "--batch-size", "8", "--steps", "1",
            "--loop-steps", "0", "--warmup", "1", "--rounds", "1", "--precision", "fp32", "--workers", "0",
            "--loader-batches", "1", "--no-progress", "--json", str(out), "head.proj_hidden=32", "head.pred_hidden=32"]
    assert bench.main(argv) == 0
    r = json.loads(out.read_text())["methods"]["byol"]
    assert "one fresh process per method" in r["memory_kind"]
    assert r["peak_memory_absolute_mib"] == pytest.approx(r["memory_before_mib"] + r["peak_memory_mib"])
    assert 0 < r["peak_memory_mib"] < r["peak_memory_absolute_mib"]


def test_peak_is_cores_times_clock_times_flop_per_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import machine

    info = ("vendor_id\t: AuthenticAMD\ncpu family\t: 25\ncpu MHz\t\t: 2445.000\nflags\t\t: fpu avx2 fma\n"
            "cpu MHz\t\t: 2450.000\n")
    monkeypatch.setattr(machine, "_cpuinfo", lambda: info)
    monkeypatch.setattr(machine.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    peak = machine.cpu_peak(cores=2)
    # the AVX2 machine: 2 cores x 2.45 GHz x 32 FLOP/cycle; no native bf16: the same rate
    assert (peak.ghz, peak.fp32_per_cycle, peak.bf16_per_cycle) == (2.45, 32, 32)
    assert peak.fp32 == pytest.approx(156.8) and peak.bf16 == pytest.approx(156.8)
    zen4 = info.replace("avx2 fma", "avx2 fma avx512f avx512_bf16")
    monkeypatch.setattr(machine, "_cpuinfo", lambda: zen4)
    monkeypatch.setattr(machine.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    peak = machine.cpu_peak(cores=2)  # Zen 4: AVX-512 on 256-bit units; AVX512-BF16 doubles it
    assert (peak.isa, peak.fp32_per_cycle, peak.bf16_per_cycle) == ("AVX512/zen4", 32, 64)
    assert machine.cpu_peak(cores=4, ghz=3.0, fp32_per_cycle=64).fp32 == pytest.approx(768)
