"""Schedules, the EMA, LARS parameter groups and augmentation seeds, against their closed forms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from cossl_train.config import OptimConfig
from cossl_train.ema import cosine_ema_rate, ema_update_
from cossl_train.optim import build_optimizer, param_groups, warmup_cosine
from cossl_train.seeds import augment_seed


def test_warmup_cosine_closed_form() -> None:
    peak, total, warm = 0.8, 100, 10
    # linear warm-up: step s (0-based) reaches peak * (s + 1) / warm
    assert [warmup_cosine(s, total, warm, peak) for s in (0, 4, 9)] == pytest.approx([0.08, 0.4, 0.8])
    # cosine from the peak at the end of warm-up to 0 at the last step
    for s in (10, 32, 55, 77, 100):
        expected = peak * (1 + math.cos(math.pi * (s - warm) / (total - warm))) / 2
        assert warmup_cosine(s, total, warm, peak) == pytest.approx(expected, abs=1e-12)
    # a floor: min_ratio * peak at the end, half-way between at the middle
    assert warmup_cosine(100, total, warm, peak, 0.1) == pytest.approx(0.08)
    assert warmup_cosine(55, total, warm, peak, 0.1) == pytest.approx(0.08 + (0.8 - 0.08) / 2)


def test_byol_ema_rate_schedule_closed_form() -> None:
    base, total = 0.99, 40
    assert cosine_ema_rate(0, total, base) == pytest.approx(base)
    assert cosine_ema_rate(total, total, base) == pytest.approx(1.0)
    assert cosine_ema_rate(total // 2, total, base) == pytest.approx(1 - (1 - base) / 2)
    s = 7  # tau = 1 - (1 - base) (cos(pi s / T) + 1) / 2
    assert cosine_ema_rate(s, total, base) == pytest.approx(1 - (1 - base) * (math.cos(math.pi * s / total) + 1) / 2)


def test_ema_update_closed_form() -> None:
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    before = {n: p.detach().clone() for n, p in target.named_parameters()}
    ema_update_([(online, target)], 0.9)
    for n, p in target.named_parameters():
        torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * dict(online.named_parameters())[n], rtol=0, atol=1e-7)
    with pytest.raises(RuntimeError, match="different parameter lists"):
        ema_update_([(online, nn.Linear(4, 4, bias=False))], 0.9)


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize("decay", [1e-3, 0.0])
def test_lars_groups_exclude_biases_and_norms_from_decay_and_adaptation(decay: float) -> None:
    model = _model()
    groups = param_groups(model, decay)
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    assert groups[0]["weight_decay"] == decay and groups[1]["weight_decay"] == 0.0
    assert {id(p) for p in groups[1]["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias),
                                                    id(model[3].bias)}

    # one LARS step against the closed form: adapted weights (with or without decay: timm's own
    # default would give plain SGD to the weights at decay 0), plain SGD for the rest
    cfg = OptimConfig(name="lars", weight_decay=decay, lars_eta=0.02, momentum=0.9)
    opt = build_optimizer(model, cfg, lr=0.5)
    model(torch.randn(8, 5)).pow(2).sum().backward()
    before = {id(p): (p.detach().clone(), p.grad.detach().clone()) for p in model.parameters()}
    opt.step()
    for p in model.parameters():
        w, g = before[id(p)]
        if id(p) in decayed:
            trust = 0.02 * w.norm() / (g.norm() + decay * w.norm() + 1e-8)
            expected = w - 0.5 * trust * (g + decay * w)
        else:
            expected = w - 0.5 * g
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)


def test_augmentation_seeds_are_distinct_across_ranks_views_epochs_and_long_runs() -> None:
    keys = list(itertools.product(range(2), range(3), range(4), range(3), range(4)))  # seed, epoch, step, rank, view
    seeds = [augment_seed(*k) for k in keys]
    assert len(set(seeds)) == len(seeds)
    # the collisions of the earlier formula: view 2 of rank r against view 1 of rank r + 1, and
    # the wrap-around after 10,007 micro-steps
    assert augment_seed(0, 0, 5, 0, 1) != augment_seed(0, 0, 5, 1, 0)
    assert augment_seed(0, 1, 0, 0, 0) != augment_seed(0, 0, 10_007, 0, 0)
    assert all(0 <= s < 2**63 for s in seeds)
    assert augment_seed(3, 2, 1, 0, 1) == augment_seed(3, 2, 1, 0, 1)  # reproducible (resume)


def test_adamw_is_fused_and_follows_the_closed_form() -> None:
    """AdamW runs as torch's fused kernel where one exists; one step against Adam's closed form
    with decoupled decay (first step: m = (1 - b1) g, v = (1 - b2) g^2, bias-corrected)."""
    model = _model()
    cfg = OptimConfig(name="adamw", weight_decay=0.1, betas=(0.9, 0.99))
    opt = build_optimizer(model, cfg, lr=0.01)
    assert opt.defaults["fused"] is True
    model(torch.randn(8, 5)).pow(2).sum().backward()
    before = {id(p): (p.detach().clone(), p.grad.detach().clone(), g["weight_decay"])
              for g in opt.param_groups for p in g["params"]}
    opt.step()
    for p in model.parameters():
        w, g, decay = before[id(p)]
        m_hat, v_hat = g, g * g  # (1 - b) g / (1 - b) after one step
        expected = w * (1 - 0.01 * decay) - 0.01 * m_hat / (v_hat.sqrt() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
