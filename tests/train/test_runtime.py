"""Precision choice (native bf16 on the CPU or not) and bf16's distance from fp32."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_OVERRIDES, TinyConvNet

from cossl_train import runtime
from cossl_train.config import load_config
from cossl_train.encoder import Encoder
from cossl_train.methods import build_method

#: documented tolerance of bf16 autocast against fp32 on a tiny model: loss within 2 %, the whole
#: gradient within 10 % and every weight's gradient within 20 % in relative L2 norm (bf16 keeps 8
#: bits of mantissa, ~0.4 % per operation; measured here: loss 0.03 %, weights 0.5-13 %). Biases of
#: convolutions followed by BatchNorm are left out: BatchNorm cancels them, their true gradient is 0
#: and both precisions only show rounding noise there.
LOSS_RTOL, GRAD_RTOL, TENSOR_RTOL = 0.02, 0.10, 0.20


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_native_cpu_bf16(monkeypatch: pytest.MonkeyPatch, native: bool, expected: str) -> None:
    monkeypatch.setattr(runtime, "cpu_native_bf16", lambda: (native, "stubbed probe"))
    chosen, why = runtime.choose_precision("auto", torch.device("cpu"))
    assert chosen == expected and "stubbed probe" in why
    assert runtime.choose_precision("fp32", torch.device("cpu"))[0] == "fp32"
    assert runtime.choose_precision("bf16", torch.device("cpu"))[0] == "bf16"


def test_cpu_bf16_probe_agrees_with_the_cpu_flags() -> None:
    """The probe asks torch; on Linux its answer must match the flags the kernel reports."""
    native, how = runtime.cpu_native_bf16()
    flags = runtime._cpu_flags()
    if flags:  # Linux
        assert native == bool({"avx512_bf16", "amx_bf16"} & flags), how


def _loss_and_grads(dtype: torch.dtype | None) -> tuple[float, list[torch.Tensor]]:
    cfg = load_config(None, [*TINY_OVERRIDES, "method.name=co_byol", "co.local_weight=0.5"])
    torch.manual_seed(0)
    model = build_method(cfg, Encoder(TinyConvNet(), (0.5,) * 3, (0.25,) * 3))
    g = torch.Generator().manual_seed(1)
    views = [torch.rand(8, 3, 16, 16, generator=g) for _ in range(2)]
    rt = runtime.Runtime(torch.device("cpu"), dtype)
    with rt.autocast():
        out = model(views)
    out.loss.float().backward()
    return out.loss.item(), [p.grad.float() for p in model.parameters() if p.grad is not None and p.ndim > 1]


def test_bf16_autocast_stays_within_the_documented_tolerance_of_fp32() -> None:
    loss32, grads32 = _loss_and_grads(None)
    loss16, grads16 = _loss_and_grads(torch.bfloat16)
    assert loss16 == pytest.approx(loss32, rel=LOSS_RTOL)
    assert len(grads16) == len(grads32) > 0
    flat16, flat32 = torch.cat([g.flatten() for g in grads16]), torch.cat([g.flatten() for g in grads32])
    assert (flat16 - flat32).norm() <= GRAD_RTOL * flat32.norm()
    for a, b in zip(grads16, grads32, strict=True):
        assert (a - b).norm() <= TENSOR_RTOL * b.norm()
