"""The CPU's theoretical peak, to put an achieved GFLOP/s in proportion (docs/benchmarks.md,
"Peak FLOP/s"): peak = cores x clock x FLOP per cycle and core of the instruction set torch's CPU
kernels use, for fp32 and for bf16. Every input can be overridden, since neither the clock a
virtual machine reports nor the number of FMA units of a core can be read reliably."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch

#: fp32 FLOP per cycle and core (2 FMA units x SIMD lanes x 2) by (torch's CPU capability, core family)
FP32_PER_CYCLE = {
    "DEFAULT": 16,  # SSE: 2 x 4 lanes x 2
    "AVX2": 32,  # 2 x 256-bit FMA: Intel Haswell and later, AMD Zen 2-5
    "AVX512": 64,  # 2 x 512-bit FMA: Intel Xeon (Skylake-SP and later, most SKUs), AMD Zen 5
    "AVX512/zen4": 32,  # AMD Zen 4 runs AVX-512 on 256-bit units
}
#: bf16 FLOP per cycle and core with AVX512-BF16 (dot products of bf16 pairs: twice the fp32 rate)
#: and with AMX tiles (Intel Sapphire Rapids and later: 1024 bf16 FLOP per cycle)
BF16_FACTOR_AVX512_BF16 = 2
AMX_BF16_PER_CYCLE = 1024


@dataclass(frozen=True)
class Peak:
    """Theoretical peak of ``cores`` cores; ``fp32``/``bf16`` in GFLOP/s, and how each input was found."""

    cores: int
    ghz: float
    isa: str
    fp32_per_cycle: int
    bf16_per_cycle: int
    sources: dict[str, str]

    @property
    def fp32(self) -> float:
        return self.cores * self.ghz * self.fp32_per_cycle

    @property
    def bf16(self) -> float:
        return self.cores * self.ghz * self.bf16_per_cycle

    def describe(self) -> str:
        return (f"{self.cores} cores x {self.ghz:.2f} GHz x {self.fp32_per_cycle} FLOP/cycle = {self.fp32:.0f} "
                f"GFLOP/s fp32, x {self.bf16_per_cycle} = {self.bf16:.0f} GFLOP/s bf16 ({self.isa})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fp32_gflops": self.fp32, "bf16_gflops": self.bf16}


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _field(info: str, name: str) -> str | None:
    m = re.search(rf"^{name}\s*:\s*(.+)$", info, re.MULTILINE)
    return m.group(1).strip() if m else None


def cpu_ghz(info: str | None = None) -> tuple[float | None, str]:
    """The highest ``cpu MHz`` of /proc/cpuinfo (the nominal clock in most virtual machines)."""
    info = _cpuinfo() if info is None else info
    mhz = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.MULTILINE)]
    return (max(mhz) / 1000, "/proc/cpuinfo cpu MHz") if mhz else (None, "no clock in /proc/cpuinfo")


def _core_family(info: str) -> str:
    """``zen4`` for AMD family 25 with AVX-512 (Zen 3 has none), else ''."""
    vendor, family = _field(info, "vendor_id"), _field(info, "cpu family")
    flags = (_field(info, "flags") or "").split()
    return "zen4" if vendor == "AuthenticAMD" and family == "25" and "avx512f" in flags else ""


def cpu_peak(cores: int | None = None, ghz: float | None = None, fp32_per_cycle: int | None = None,
             bf16_per_cycle: int | None = None) -> Peak:
    """The peak of the cores torch computes on (``torch.get_num_threads()``), at the clock of
    :func:`cpu_ghz`, with the FLOP per cycle of the ISA ``torch.backends.cpu.get_cpu_capability()``
    reports (``ATEN_CPU_CAPABILITY`` lowers it); any argument given replaces what is detected.

    >>> cpu_peak(cores=2, ghz=2.45, fp32_per_cycle=32, bf16_per_cycle=32).fp32
    156.8
    """
    info = _cpuinfo()
    flags = set((_field(info, "flags") or "").split())
    isa = torch.backends.cpu.get_cpu_capability()
    sources = {}
    if ghz is None:
        ghz, sources["ghz"] = cpu_ghz(info)
        ghz = ghz or float("nan")
    else:
        sources["ghz"] = "given"
    if cores is None:
        cores, sources["cores"] = torch.get_num_threads(), "torch.get_num_threads()"
        cores = min(cores, os.cpu_count() or cores)
    else:
        sources["cores"] = "given"
    family = _core_family(info)
    key = f"{isa}/{family}" if f"{isa}/{family}" in FP32_PER_CYCLE else isa
    if fp32_per_cycle is None:
        fp32_per_cycle = FP32_PER_CYCLE.get(key, FP32_PER_CYCLE["DEFAULT"])
        sources["fp32_per_cycle"] = f"torch CPU capability {isa}{' on ' + family if family else ''}"
    else:
        sources["fp32_per_cycle"] = "given"
    if bf16_per_cycle is None:
        amx = "amx_bf16" in flags and isa == "AVX512" and _env_allows_amx()
        native = "avx512_bf16" in flags and isa == "AVX512"
        bf16_per_cycle = (AMX_BF16_PER_CYCLE if amx else fp32_per_cycle * BF16_FACTOR_AVX512_BF16 if native
                          else fp32_per_cycle)
        sources["bf16_per_cycle"] = ("AMX" if amx else "AVX512-BF16: twice fp32" if native
                                     else "no native bf16 for this ISA: the fp32 rate")
    else:
        sources["bf16_per_cycle"] = "given"
    return Peak(int(cores), float(ghz), key, int(fp32_per_cycle), int(bf16_per_cycle), sources)


def _env_allows_amx() -> bool:
    """Whether oneDNN may use AMX (``ONEDNN_MAX_CPU_ISA`` not capped below it)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return not cap or "AMX" in cap or cap == "ALL"
