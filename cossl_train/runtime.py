"""Where and how a run computes: device, autocast precision, seeding.

``train.precision=auto`` picks bf16 autocast on CUDA devices that support it and on CPUs with
native bf16 arithmetic (AVX512-BF16 or AMX, asked of torch, else read from the CPU flags); fp32
elsewhere, because on a CPU without them bf16 is emulated (measured 10-15x slower than fp32 on
an AVX2-only CPU). The choice is returned with its reason, which the trainer and the benchmark print.
"""

from __future__ import annotations

import os
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from . import distributed as dist_utils
from .errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype | None  #: autocast dtype, None for fp32
    precision_reason: str = ""

    @property
    def precision(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def autocast(self) -> AbstractContextManager:
        """Autocast to the run's precision (a no-op context in fp32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is a 16-bit float (autocast output), else unchanged (float64 stays)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and how that was found out."""
    probes = (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
    asked = [(name, getattr(torch.cpu, fn, None)) for name, fn in probes]
    if all(fn is not None for _, fn in asked):
        have = [name for name, fn in asked if fn()]
        return bool(have), f"torch.cpu reports {' and '.join(have) if have else 'neither AVX512-BF16 nor AMX'}"
    flags = _cpu_flags()
    have = [name for name, flag in (("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_bf16")) if flag in flags]
    return bool(have), f"CPU flags list {' and '.join(have) if have else 'neither avx512_bf16 nor amx_bf16'}"


def choose_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(``bf16`` or ``fp32``, why) for ``train.precision=requested`` on ``device``."""
    if requested != "auto":
        return requested, f"train.precision={requested}"
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16" if ok else "fp32"), f"auto: CUDA device {'supports' if ok else 'lacks'} bf16"
    native, how = cpu_native_bf16()
    if native:
        return "bf16", f"auto: native bf16 on this CPU ({how})"
    return "fp32", f"auto: bf16 would be emulated on this CPU ({how})"


def resolve_device(want: str, key: str = "train.device") -> torch.device:
    """``auto``: this process's GPU when CUDA is available, else the CPU; otherwise ``want`` itself.
    A name torch does not know, or CUDA where there is none, is a one-line error naming ``key``."""
    if want == "auto":
        if dist_utils.is_distributed() and torch.cuda.is_available():
            want = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        else:
            want = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(want)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key}={want!r} is not a torch device (auto, cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={want!r} but CUDA is not available here (use cpu)")
    return device


def resolve_runtime(device: str, precision: str) -> Runtime:
    """The device (``auto``: this process's GPU, else the CPU) and the autocast precision."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # fixed input sizes: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True
    chosen, why = choose_precision(precision, dev)
    return Runtime(dev, torch.bfloat16 if chosen == "bf16" else None, why)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
