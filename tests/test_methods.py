"""Methods: lambda = 0 equals the base method exactly; the CO term equals its definition."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TinyConvNet

from cossl_train.co_term import CoTerm
from cossl_train.encoder import Encoder, global_pool
from cossl_train.methods import BYOL, SimCLR

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _views(seed: int = 0, b: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size, size, generator=g)


def _make(kind: str, co: bool, lam: float, direction: str = "both") -> BYOL | SimCLR:
    torch.manual_seed(0)
    enc = Encoder(TinyConvNet(), MEAN, STD)
    if kind == "byol":
        model: BYOL | SimCLR = BYOL(enc, 32, 16, 32)
    else:
        model = SimCLR(enc, 32, 16, temperature=0.2)
    if co:  # created after the base parts, as build_method does
        model.co = CoTerm(enc.num_features, 16, 24, 24, kind="byol" if kind == "byol" else "infonce",
                          direction=direction, temperature=0.2)
        model.lam = lam
    return model


def _loss_and_grads(model: torch.nn.Module, v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, dict]:
    out = model(v1, v2)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None and not n.startswith("co.")}
    return out.loss.detach(), grads


@pytest.mark.parametrize("kind", ["byol", "simclr"])
def test_lambda_zero_is_the_base_method_bit_for_bit(kind: str) -> None:
    v1, v2 = _views()
    base = _make(kind, co=False, lam=0.0)
    co = _make(kind, co=True, lam=0.0)
    loss_b, grads_b = _loss_and_grads(base, v1, v2)
    loss_c, grads_c = _loss_and_grads(co, v1, v2)
    assert torch.equal(loss_b, loss_c)
    assert grads_b.keys() == grads_c.keys() and len(grads_b) > 0
    for name in grads_b:
        assert torch.equal(grads_b[name], grads_c[name]), name


@pytest.mark.parametrize("kind", ["byol", "simclr"])
def test_positive_lambda_changes_encoder_gradients(kind: str) -> None:
    v1, v2 = _views()
    _, grads_b = _loss_and_grads(_make(kind, co=False, lam=0.0), v1, v2)
    _, grads_c = _loss_and_grads(_make(kind, co=True, lam=1.0), v1, v2)
    name = "encoder.backbone.net.0.weight"
    assert not torch.allclose(grads_b[name], grads_c[name])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("direction", ["local_to_global", "global_to_local", "both"])
def test_co_byol_local_loss_matches_its_definition(direction: str) -> None:
    """L_l recomputed with loops from the model's own heads, position by position."""
    v1, v2 = _views(1)
    model = _make("byol", co=True, lam=0.7, direction=direction)
    # perturb the momentum copies so that using the wrong network would show
    with torch.no_grad():
        for p in model.co.target_local_projector.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = copy.deepcopy(model)
    out = model(v1, v2)

    with torch.no_grad():
        f = [ref.encoder(v1), ref.encoder(v2)]
        ft = [ref.target_encoder(v1), ref.target_encoder(v2)]
        preds = [ref.predictor(ref.projector(global_pool(x))) for x in f]
        targets = [ref.target_projector(global_pool(x)) for x in ft]
        co = ref.co
        l2g, g2l = [], []
        for a, b in ((0, 1), (1, 0)):
            rows = f[a].flatten(2).transpose(1, 2).reshape(-1, f[a].shape[1])  # BN over all positions
            q_local = co.local_predictor(co.local_projector(rows)).view(f[a].shape[0], -1, 16).numpy()
            rows_t = ft[b].flatten(2).transpose(1, 2).reshape(-1, ft[b].shape[1])
            z_local = co.target_local_projector(rows_t).view(ft[b].shape[0], -1, 16).numpy()
            t, p = targets[b].numpy(), preds[a].numpy()
            l2g.append(np.mean([2 - 2 * _cos(q_local[i, j], t[i]) for i in range(6) for j in range(q_local.shape[1])]))
            g2l.append(np.mean([2 - 2 * _cos(p[i], z_local[i, j]) for i in range(6) for j in range(z_local.shape[1])]))
        terms = {"local_to_global": np.mean(l2g), "global_to_local": np.mean(g2l)}
        both = (terms["local_to_global"] + terms["global_to_local"]) / 2
        expected = terms[direction] if direction != "both" else both
    assert out.loss_local.item() == pytest.approx(expected, rel=1e-5)
    assert out.loss.item() == pytest.approx(out.loss_global.item() + 0.7 * expected, rel=1e-5)


def test_co_byol_targets_get_no_gradient() -> None:
    v1, v2 = _views(2)
    model = _make("byol", co=True, lam=1.0)
    model(v1, v2).loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(("target_", "co.target_")):
            assert p.grad is None, name
        else:
            assert p.grad is not None, name


def test_co_simclr_local_term_matches_reference() -> None:
    v1, v2 = _views(3)
    model = _make("simclr", co=True, lam=0.5, direction="local_to_global")
    ref = copy.deepcopy(model)
    out = model(v1, v2)
    with torch.no_grad():
        f = [ref.encoder(v1), ref.encoder(v2)]
        z = [ref.projector(global_pool(x)).numpy() for x in f]
        total = []
        for a, b in ((0, 1), (1, 0)):
            rows = f[a].flatten(2).transpose(1, 2).reshape(-1, f[a].shape[1])
            q = ref.co.local_projector(rows).view(6, -1, 16).numpy()
            losses = []
            for i in range(6):
                for j in range(q.shape[1]):
                    s = np.array([_cos(q[i, j], z[b][k]) / 0.2 for k in range(6)])
                    losses.append(-(s[i] - np.log(np.exp(s).sum())))
            total.append(np.mean(losses))
    assert out.loss_local.item() == pytest.approx(np.mean(total), rel=1e-5)
