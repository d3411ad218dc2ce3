"""SimCLR's CO term computes its local projector once per view: the local targets are the local
queries of the same maps, so one pass gives the loss and every gradient of two."""

from __future__ import annotations

import pytest
import torch
from conftest import METHOD_OVERRIDES, TinyConvNet

from cossl_train.config import load_config
from cossl_train.encoder import Encoder
from cossl_train.methods import build_method
from cossl_train.methods.co_term import LocalHeads


def _model(*extra: str) -> torch.nn.Module:
    cfg = load_config(None, [*METHOD_OVERRIDES, "method.name=co_simclr", "co.local_weight=0.5", *extra])
    torch.manual_seed(0)
    return build_method(cfg, Encoder(TinyConvNet(), (0.5,) * 3, (0.25,) * 3)).double()


def _step(model: torch.nn.Module) -> tuple[float, dict[str, torch.Tensor], int]:
    """(loss, gradients, forward passes of the local projector) of one step on fixed views."""
    g = torch.Generator().manual_seed(3)
    views = [torch.rand(6, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2)]
    calls = []
    hook = model.co.local_projector.register_forward_hook(lambda *_: calls.append(1))
    out = model(views)
    out.loss.backward()
    hook.remove()
    return out.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)


@pytest.mark.parametrize("extra", [(), ("co.grid=2",)])
def test_one_local_pass_equals_two(monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...]) -> None:
    loss, grads, calls = _step(_model(*extra))
    # the two-pass computation: local targets recomputed from the maps, as for a momentum method
    monkeypatch.setattr(LocalHeads, "_targets_are_queries", lambda *_: False)
    loss2, grads2, calls2 = _step(_model(*extra))
    assert (calls, calls2) == (2, 4)  # once per view instead of twice
    assert loss == pytest.approx(loss2, rel=1e-12)
    assert grads.keys() == grads2.keys() and any(n.startswith("co.local_projector") for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], grads2[name], rtol=1e-10, atol=1e-13, msg=name)


@pytest.mark.parametrize("extra", [("co.direction=local_to_global",), ("co.direction=global_to_local",),
                                   ("co.shared_heads=true",)])
def test_other_settings_keep_their_own_passes(extra: tuple[str, ...]) -> None:
    """Only the two-direction term with separate heads has identical queries and targets."""
    model = _model(*extra)
    expected = {"co.direction=local_to_global": 2, "co.direction=global_to_local": 2, "co.shared_heads=true": None}
    if model.co.local_projector is None:
        assert expected[extra[0]] is None
        return
    assert _step(model)[2] == expected[extra[0]]
