"""Patch dropping: limits (nothing dropped / all but one dropped), orders, seeding, probe, plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cossl_analysis import num_dropped, patch_drop_analysis, pool_kept, position_drop_order, probe_accuracy
from cossl_analysis.report import save_patch_drop
from cossl_analysis.viz.patch_drop import drop_panels
from cossl_train.encoder import global_pool, local_features


@pytest.fixture
def fmaps() -> torch.Tensor:
    """(B, C, h, w) = (10, 6, 3, 4) feature maps (the analyses are run on nn.Identity)."""
    return torch.randn(10, 6, 3, 4, generator=torch.Generator().manual_seed(0))


def test_num_dropped_keeps_at_least_one() -> None:
    assert [num_dropped(f, 49) for f in (0.0, 0.1, 0.5, 0.99, 1.0)] == [0, 5, 25, 48, 48]
    assert num_dropped(0.5, 1) == 0
    with pytest.raises(ValueError):
        num_dropped(1.2, 4)


def test_position_orders() -> None:
    assert position_drop_order(3, 3, "border")[-1].item() == 4  # the centre goes last
    assert sorted(position_drop_order(4, 4, "border")[-4:].tolist()) == [5, 6, 9, 10]
    assert position_drop_order(2, 3, "raster").tolist() == list(range(6))
    assert sorted(position_drop_order(5, 7, "border").tolist()) == list(range(35))


def test_pool_kept_limits(fmaps: torch.Tensor) -> None:
    local = local_features(fmaps)  # (B, P, C)
    n_img, n_pos, _ = local.shape
    order = torch.stack([torch.randperm(n_pos) for _ in range(n_img)])
    torch.testing.assert_close(pool_kept(local, order, 0), global_pool(fmaps))
    last = pool_kept(local, order, n_pos - 1)
    torch.testing.assert_close(last, local[torch.arange(n_img), order[:, -1]])
    # Dropping k: the mean of the others, computed independently.
    k = 5
    expected = torch.stack([local[b, order[b, k:]].mean(dim=0) for b in range(n_img)])
    torch.testing.assert_close(pool_kept(local, order, k), expected)
    with pytest.raises(ValueError):
        pool_kept(local, order, n_pos)


def test_zero_fraction_leaves_global_rep_and_accuracy_unchanged(fmaps: torch.Tensor) -> None:
    probe = nn.Linear(6, 3)
    labels = torch.arange(10) % 3
    res = patch_drop_analysis(nn.Identity(), fmaps, [0.0, 0.5], probe=probe, labels=labels, batch_size=4)
    assert res.cosine_mean[0] == pytest.approx(1.0, abs=1e-6)
    assert res.cosine_std[0] == pytest.approx(0.0, abs=1e-3)
    intact = probe_accuracy(nn.Identity(), probe, fmaps, labels)
    assert res.accuracy[0] == pytest.approx(intact)
    assert res.intact_accuracy == pytest.approx(intact)
    assert res.num_dropped == [0, 6] and res.num_positions == 12 and res.num_images == 10


def test_all_but_one_gives_that_local_representation(fmaps: torch.Tensor) -> None:
    res = patch_drop_analysis(nn.Identity(), fmaps, [1.0], mode="position", order="raster")
    local = local_features(fmaps).double()
    kept = local[:, -1]  # raster order drops everything but the bottom-right position
    cos = torch.nn.functional.cosine_similarity(kept, local.mean(dim=1), dim=1)
    assert res.cosine_mean[0] == pytest.approx(cos.mean().item(), rel=1e-5)
    # the spread over images is the sample std (ddof = 1), as everywhere in the package
    assert res.cosine_std[0] == pytest.approx(float(np.std(cos.numpy(), ddof=1)), rel=1e-4)
    one = patch_drop_analysis(nn.Identity(), fmaps[:1], [1.0], mode="position", order="raster")
    assert math.isnan(one.cosine_std[0])  # one image has no spread


def test_the_axis_is_the_fraction_actually_dropped(fmaps: torch.Tensor, tmp_path) -> None:
    """f = 1 keeps one of P = 12 positions: the result and the plot say 11/12 and 'all but one', not 1.0."""
    res = patch_drop_analysis(nn.Identity(), fmaps, [0.0, 0.3, 1.0])
    assert res.num_dropped == [0, 4, 11]
    assert res.fraction_dropped == [0.0, 4 / 12, 11 / 12]
    assert res.all_but_one == [False, False, True]
    (panel,) = drop_panels({"m": res})
    assert list(panel.series[0].x) == res.fraction_dropped
    assert panel.marker == (11 / 12, "all but one") and "k / P" in panel.xlabel
    saved = save_patch_drop(res, tmp_path / "drop.png")
    assert saved["model"]["fraction_dropped"][-1] == pytest.approx(11 / 12)


def test_head_is_applied_after_the_mean_of_the_kept_positions(fmaps: torch.Tensor) -> None:
    """An Encoder's global representation is head(spatial mean): patch dropping pools the kept
    positions the same way, so nothing dropped gives the encoder's own pooled features."""
    from cossl_analysis.analyses.patch_drop import patch_drop_from_features
    from cossl_train.encoder import Encoder

    torch.manual_seed(0)
    backbone = nn.Identity()
    backbone.num_features = 6
    enc = Encoder(backbone, mean=(0.0,) * 3, std=(1.0,) * 3, head=nn.Sequential(nn.Linear(6, 6), nn.Tanh()))
    probe = nn.Linear(6, 3)
    labels = torch.arange(10) % 3
    local = local_features(fmaps)
    res = patch_drop_from_features(local, [0.0, 0.5], head=enc.head, probe=probe, labels=labels, seed=0)
    gen = torch.Generator().manual_seed(0)  # the per-image orders, drawn image by image from the seed
    order = torch.stack([torch.randperm(12, generator=gen) for _ in range(10)])
    with torch.no_grad():
        intact = enc.pool(fmaps)
        degraded = enc.head(pool_kept(local, order, 6))
        cos = torch.nn.functional.cosine_similarity(degraded, intact, dim=1)
        expected = (probe(intact).argmax(1) == labels).float().mean().item()
    assert res.accuracy[0] == pytest.approx(expected) and res.intact_accuracy == pytest.approx(expected)
    assert res.cosine_mean[0] == pytest.approx(1.0, abs=1e-6)
    assert res.cosine_mean[1] == pytest.approx(cos.mean().item(), rel=1e-5)


def test_random_mode_seeded_batch_size_independent(fmaps: torch.Tensor) -> None:
    fr = [0.25, 0.75]
    a = patch_drop_analysis(nn.Identity(), fmaps, fr, seed=5, batch_size=3)
    b = patch_drop_analysis(nn.Identity(), fmaps, fr, seed=5, batch_size=10)
    c = patch_drop_analysis(nn.Identity(), fmaps, fr, seed=6)
    np.testing.assert_allclose(a.cosine_mean, b.cosine_mean, rtol=1e-6)
    assert a.cosine_mean != c.cosine_mean
    with pytest.raises(ValueError, match="labels"):
        patch_drop_analysis(nn.Identity(), fmaps, fr, probe=nn.Linear(6, 2))


def test_accepts_iterable_of_labelled_batches(fmaps: torch.Tensor) -> None:
    probe = nn.Linear(6, 3)
    labels = torch.arange(10) % 3
    batches = [(fmaps[:4], labels[:4]), (fmaps[4:], labels[4:])]
    a = patch_drop_analysis(nn.Identity(), batches, [0.0, 0.5], mode="position", probe=probe)
    b = patch_drop_analysis(nn.Identity(), fmaps, [0.0, 0.5], mode="position", probe=probe, labels=labels)
    assert a.accuracy == b.accuracy
    np.testing.assert_allclose(a.cosine_mean, b.cosine_mean, rtol=1e-6)


def test_save_writes_png_and_json(tmp_path, fmaps: torch.Tensor) -> None:
    probe = nn.Linear(6, 3)
    labels = torch.arange(10) % 3
    r1 = patch_drop_analysis(nn.Identity(), fmaps, probe=probe, labels=labels)
    r2 = patch_drop_analysis(nn.Identity(), fmaps, mode="position")
    save_patch_drop(r1, tmp_path / "one.png")
    save_patch_drop({"random": r1, "border": r2}, tmp_path / "two.png")
    assert (tmp_path / "one.png").stat().st_size > 0 and (tmp_path / "two.png").stat().st_size > 0
    saved = json.loads((tmp_path / "two.json").read_text())
    assert saved["random"]["cosine_mean"] == pytest.approx(r1.cosine_mean)
    assert saved["border"]["accuracy"] is None
