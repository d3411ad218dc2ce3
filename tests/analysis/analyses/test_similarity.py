"""Local/global similarity (Figure 3B) against independent numpy/scipy computations."""

from __future__ import annotations

import csv
import json
from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from torch import nn

from cossl_analysis import SimilarityResult, pearson, similarity_analysis, similarity_from_features
from cossl_analysis.report import save_similarity
from cossl_analysis.viz.similarity import plot_similarity_panels


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def fmaps() -> torch.Tensor:
    """(B, C, h, w) = (7, 5, 2, 3) feature maps standing in for a model's output."""
    return torch.randn(7, 5, 2, 3, generator=torch.Generator().manual_seed(0))


def _reps(fmaps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = fmaps.double().numpy()
    glob = x.mean(axis=(2, 3))  # (B, C)
    loc = x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)  # (B, P, C)
    return glob, loc


@pytest.mark.parametrize("mode", ["random", "same", "all"])
def test_matches_explicit_loops(fmaps: torch.Tensor, mode: str) -> None:
    # Identity "model": the analysis sees the feature maps themselves.
    res = similarity_analysis(nn.Identity(), fmaps, mode=mode, seed=3, batch_size=3)
    glob, loc = _reps(fmaps)
    n_img, n_pos, _ = loc.shape
    pairs = list(combinations(range(n_img), 2))
    assert res.pairs.tolist() == [list(p) for p in pairs]
    exp_global = [_cos(glob[i], glob[j]) for i, j in pairs]
    if mode == "random":
        assert res.local_positions is not None and res.local_positions.shape == (len(pairs), 2)
        exp_local = [_cos(loc[i, p], loc[j, q]) for (i, j), (p, q) in zip(pairs, res.local_positions, strict=True)]
    elif mode == "same":
        exp_local = [np.mean([_cos(loc[i, p], loc[j, p]) for p in range(n_pos)]) for i, j in pairs]
    else:
        exp_local = [
            np.mean([_cos(loc[i, p], loc[j, q]) for p in range(n_pos) for q in range(n_pos)]) for i, j in pairs
        ]
    np.testing.assert_allclose(res.global_sim, exp_global, rtol=1e-6)
    np.testing.assert_allclose(res.local_sim, exp_local, rtol=1e-6)
    assert res.pearson_c == pytest.approx(pearsonr(exp_global, exp_local).statistic, rel=1e-6)

    exp_intra = [
        np.mean([_cos(loc[b, p], loc[b, q]) for p in range(n_pos) for q in range(n_pos) if p != q])
        for b in range(n_img)
    ]
    np.testing.assert_allclose(res.intra_local_sim, exp_intra, rtol=1e-6)
    assert res.intra_local_mean == pytest.approx(np.mean(exp_intra))
    assert (res.num_images, res.num_positions, res.mode) == (7, 6, mode)


def test_random_mode_is_seeded_and_batch_size_independent(fmaps: torch.Tensor) -> None:
    a = similarity_analysis(nn.Identity(), fmaps, seed=1, batch_size=2)
    b = similarity_analysis(nn.Identity(), fmaps, seed=1, batch_size=7)
    c = similarity_analysis(nn.Identity(), fmaps, seed=2)
    np.testing.assert_array_equal(a.local_positions, b.local_positions)
    np.testing.assert_allclose(a.local_sim, b.local_sim)
    assert not np.array_equal(a.local_positions, c.local_positions)


def test_pearson_against_scipy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.3 * x + rng.normal(size=50)
    assert pearson(x, y) == pytest.approx(pearsonr(x, y).statistic, rel=1e-10)
    assert np.isnan(pearson(np.ones(5), y[:5]))


def test_max_pairs_subsamples_existing_pairs(fmaps: torch.Tensor) -> None:
    glob, loc = _reps(fmaps)
    full = similarity_from_features(torch.from_numpy(glob), torch.from_numpy(loc), mode="same")
    sub = similarity_from_features(torch.from_numpy(glob), torch.from_numpy(loc), mode="same", max_pairs=5)
    assert len(sub.pairs) == 5
    lookup = {tuple(p): k for k, p in enumerate(full.pairs.tolist())}
    idx = [lookup[tuple(p)] for p in sub.pairs.tolist()]
    np.testing.assert_allclose(sub.local_sim, full.local_sim[idx])
    np.testing.assert_allclose(sub.global_sim, full.global_sim[idx])


def test_identical_local_representations() -> None:
    # Every position of an image carries the same vector: local == global, intra similarity == 1, C == 1.
    vec = torch.randn(6, 4, 1, 1, generator=torch.Generator().manual_seed(1))
    res = similarity_analysis(nn.Identity(), vec.expand(6, 4, 3, 3).contiguous())
    # Features are float32 (the model's dtype), the similarity arithmetic float64.
    np.testing.assert_allclose(res.intra_local_sim, 1.0, rtol=1e-6)
    np.testing.assert_allclose(res.local_sim, res.global_sim, rtol=1e-6)
    assert res.pearson_c == pytest.approx(1.0)


def test_save_writes_png_csv_json(tmp_path, fmaps: torch.Tensor) -> None:
    res = similarity_analysis(nn.Identity(), fmaps)
    assert isinstance(res, SimilarityResult)
    summaries = save_similarity(res, tmp_path / "sim.png")
    assert (tmp_path / "sim.png").stat().st_size > 0
    assert json.loads((tmp_path / "sim.json").read_text())["model"]["pearson_c"] == pytest.approx(res.pearson_c)
    assert summaries["model"]["num_pairs"] == 21
    rows = list(csv.DictReader(open(tmp_path / "sim.csv")))
    assert len(rows) == 21 and float(rows[0]["local_sim"]) == pytest.approx(res.local_sim[0])
    other = similarity_analysis(nn.Identity(), fmaps, mode="all")
    save_similarity({"random": res, "all": other}, tmp_path / "two.png", max_points=10)
    assert len(list(csv.DictReader(open(tmp_path / "two.csv")))) == 42


def test_one_panel_per_result(fmaps: torch.Tensor) -> None:
    """Figure 3B compares models side by side: each result gets its own axes holding its own pairs only."""
    a = similarity_analysis(nn.Identity(), fmaps, seed=0)
    b = similarity_analysis(nn.Identity(), 2 * fmaps[:5], seed=1)
    fig = plot_similarity_panels({"A": a, "B": b})
    axes = [ax for ax in fig.axes if ax.collections]
    assert [ax.get_title() for ax in axes] == [f"A: C = {a.pearson_c:.2f}", f"B: C = {b.pearson_c:.2f}"]
    for ax, res in zip(axes, (a, b), strict=True):
        (points,) = ax.collections
        np.testing.assert_allclose(points.get_offsets(), np.c_[res.local_sim, res.global_sim])


def test_result_round_trips_through_a_dict(fmaps: torch.Tensor) -> None:
    res = similarity_analysis(nn.Identity(), fmaps, seed=2)
    back = SimilarityResult.from_dict(res.to_dict())
    assert back.summary() == res.summary()
    np.testing.assert_array_equal(back.local_positions, res.local_positions)
    np.testing.assert_array_equal(back.pairs, res.pairs)


def test_a_one_position_map_warns_that_c_is_not_local_against_global() -> None:
    """At 1x1 the local representation is the global one (C = 1 for an identity head): say so."""
    glob = torch.randn(6, 4)
    with pytest.warns(RuntimeWarning, match="1 position"):
        res = similarity_from_features(glob, glob.unsqueeze(1))
    assert res.pearson_c == pytest.approx(1.0) and np.isnan(res.intra_local_mean)
