"""Each loss against its closed form, computed independently with loops and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cossl_train.losses import (
    byol_loss,
    dino_cross_entropy,
    global_to_local_infonce,
    infonce_loss,
    local_to_global_infonce,
    nt_xent_loss,
    teacher_probabilities,
)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_byol_loss_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    expected = np.mean([2 - 2 * _cos(p[i].numpy(), z[i].numpy()) for i in range(5)])
    assert byol_loss(p, z).item() == pytest.approx(expected, abs=1e-12)
    assert byol_loss(p, p).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, abs=1e-12)


def test_byol_loss_broadcasts_one_global_target_over_positions() -> None:
    g = torch.Generator().manual_seed(1)
    p, z = torch.randn(3, 4, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    expected = np.mean([2 - 2 * _cos(p[b, i].numpy(), z[b].numpy()) for b in range(3) for i in range(4)])
    assert byol_loss(p, z.unsqueeze(1)).item() == pytest.approx(expected, abs=1e-12)


def _nt_xent_reference(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(z[i] @ z[k] / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(z[i] @ z[pos] / t) / denom)
    return total / (2 * n)


def test_nt_xent_closed_form() -> None:
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    got = nt_xent_loss(z1, z2, z1, z2, temperature=0.5).item()
    assert got == pytest.approx(_nt_xent_reference(z1.numpy(), z2.numpy(), 0.5), rel=1e-10)


def test_nt_xent_with_gathered_keys_equals_full_batch_mean() -> None:
    """Two halves scored against the gathered keys average to the full-batch loss (DDP invariant)."""
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, 5, generator=g, dtype=torch.float64)
    full = nt_xent_loss(z1, z2, z1, z2, 0.2)
    halves = [nt_xent_loss(z1[s:s + 4], z2[s:s + 4], z1, z2, 0.2, offset=s) for s in (0, 4)]
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(full.item(), rel=1e-12)


def _local_infonce_reference(q: np.ndarray, k: np.ndarray, t: float) -> float:
    """Plain loops: every local query (b, p) against all global keys, positive = same image."""
    b_n, p_n, _ = q.shape
    total = 0.0
    for b in range(b_n):
        for p in range(p_n):
            sims = [_cos(q[b, p], k[j]) / t for j in range(len(k))]
            total += -(sims[b] - math.log(sum(math.exp(s) for s in sims)))
    return total / (b_n * p_n)


def test_local_to_global_infonce_reference() -> None:
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(4, 9, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    got = local_to_global_infonce(q, k, 0.3).item()
    assert got == pytest.approx(_local_infonce_reference(q.numpy(), k.numpy(), 0.3), rel=1e-10)


def test_global_to_local_infonce_reference() -> None:
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    expected = 0.0
    for p in range(3):
        for b in range(4):
            sims = [_cos(q[b].numpy(), k[j, p].numpy()) / 0.3 for j in range(4)]
            expected += -(sims[b] - math.log(sum(math.exp(s) for s in sims)))
    expected /= 12
    assert global_to_local_infonce(q, k, 0.3).item() == pytest.approx(expected, rel=1e-10)


def test_local_infonce_offset_selects_positive_among_gathered_keys() -> None:
    g = torch.Generator().manual_seed(6)
    q, k = torch.randn(2, 5, 6, generator=g, dtype=torch.float64), torch.randn(6, 6, generator=g, dtype=torch.float64)
    # the two local images are rows 2 and 3 of the gathered keys
    perm = torch.tensor([2, 3, 0, 1, 4, 5])
    expected = _local_infonce_reference(q.numpy(), k[perm].numpy(), 0.5)
    assert local_to_global_infonce(q, k, 0.5, offset=2).item() == pytest.approx(expected, rel=1e-10)


def test_infonce_loss_closed_form_with_offset() -> None:
    """MoCo-v3's InfoNCE: query b's positive is key offset + b among the gathered keys."""
    g = torch.Generator().manual_seed(7)
    q, k = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    expected = np.mean([-(_cos(q[b].numpy(), k[2 + b].numpy()) / 0.4
                          - math.log(sum(math.exp(_cos(q[b].numpy(), k[j].numpy()) / 0.4) for j in range(7))))
                        for b in range(3)])
    assert infonce_loss(q, k, 0.4, offset=2).item() == pytest.approx(expected, rel=1e-10)


def test_dino_teacher_probabilities_and_cross_entropy_closed_form() -> None:
    g = torch.Generator().manual_seed(8)
    s = torch.randn(4, 6, generator=g, dtype=torch.float64)
    t = torch.randn(4, 6, generator=g, dtype=torch.float64)
    c = torch.randn(6, generator=g, dtype=torch.float64)
    probs = teacher_probabilities(t, c, 0.04)
    expected_probs = np.array([np.exp((t[i] - c).numpy() / 0.04) / np.exp((t[i] - c).numpy() / 0.04).sum()
                               for i in range(4)])
    np.testing.assert_allclose(probs.numpy(), expected_probs, rtol=1e-10)
    log_p = [s[i].numpy() / 0.1 - math.log(np.exp(s[i].numpy() / 0.1).sum()) for i in range(4)]
    expected = np.mean([-(expected_probs[i] * log_p[i]).sum() for i in range(4)])
    assert dino_cross_entropy(s, probs, 0.1).item() == pytest.approx(expected, rel=1e-10)
    # one teacher distribution broadcast over P local student outputs
    s_local = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    per_pos = np.mean([dino_cross_entropy(s_local[:, j], probs, 0.1).item() for j in range(3)])
    assert dino_cross_entropy(s_local, probs.unsqueeze(1), 0.1).item() == pytest.approx(per_pos, rel=1e-12)
    assert not probs.requires_grad
