"""Figure layouts of the notebooks (cossl_analysis.figures), on synthetic inputs: no training here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cossl_analysis import figures
from cossl_analysis.similarity import similarity_from_features
from cossl_train import grid
from cossl_train.config import load_config


def _row(method: str, backbone: str, rf: int, c_min: float, top1: float, **kw) -> dict:
    row = {"method": method, "backbone": backbone, "rf": rf, "c_min": c_min, "epochs": 1, "linear_top1": top1,
           "linear_top5": top1 + 10, "knn_top1": top1 - 5, "checkpoint": f"/runs/{method}_{backbone}_{c_min}/c.pt"}
    row.update(kw)
    return row


#: a small grid table: CO-BYOL on three RFs x two c_min, BYOL ResNet-50 references at both c_min
ROWS = [
    *(_row("co_byol", b, rf, c, 50 + rf / 10 + 10 * c)
      for b, rf in (("rf_resnet50_rf43", 43), ("rf_resnet50_rf155", 155), ("resnet50", 427)) for c in (0.2, 0.7)),
    _row("byol", "resnet50", 427, 0.2, 60.0),
    _row("byol", "resnet50", 427, 0.7, 65.0),
]


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """ROWS written by the grid's own writer, so the test follows the grid's CSV contract."""
    path = tmp_path / "results.csv"
    grid.write_csv(ROWS, path)
    return path


def test_result_columns_follow_the_grid() -> None:
    assert figures.RESULT_COLUMNS == grid.CSV_COLUMNS


def test_read_results(table: Path) -> None:
    rows = figures.read_results(table)
    assert len(rows) == len(ROWS)
    first = rows[0]
    assert (first.method, first.backbone, first.rf, first.c_min) == ("co_byol", "rf_resnet50_rf43", 43, 0.2)
    assert first.metric("linear_top1") == pytest.approx(ROWS[0]["linear_top1"])
    with pytest.raises(ValueError, match="unknown metric"):
        first.metric("accuracy")


def test_read_results_refuses_bad_tables(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("method,backbone,rf\nco_byol,resnet50,427\n")
    with pytest.raises(ValueError, match="missing column.*c_min"):
        figures.read_results(bad)
    empty = tmp_path / "empty.csv"
    grid.write_csv([], empty)
    with pytest.raises(ValueError, match="no rows"):
        figures.read_results(empty)
    garbled = tmp_path / "garbled.csv"
    grid.write_csv([{**_row("co_byol", "resnet50", 427, 0.2, 50.0), "rf": "big"}], garbled)
    with pytest.raises(ValueError, match="line 2"):
        figures.read_results(garbled)
    with pytest.raises(FileNotFoundError):
        figures.read_results(tmp_path / "missing.csv")


def test_missing_metric_reads_as_nan_and_is_not_plotted(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    grid.write_csv([*ROWS, _row("co_byol", "rf_resnet50_rf67", 67, 0.2, 1.0, knn_top1="")], path)
    rows = figures.read_results(path)
    assert math.isnan(rows[-1].knn_top1)
    points = figures.curve_rows(rows, metric="knn_top1")
    assert all(p["backbone"] != "rf_resnet50_rf67" for p in points)
    assert any(p["backbone"] == "rf_resnet50_rf67" for p in figures.curve_rows(rows, metric="linear_top1"))


def test_grid_method_and_split(table: Path) -> None:
    rows = figures.read_results(table)
    assert figures.grid_method(rows) == "co_byol"
    grid_rows, refs = figures.split_results(rows)
    assert len(grid_rows) == 6 and {r.method for r in refs} == {"byol"}
    # Without a CO method, the most frequent method makes the curves (and the others are references).
    byol = [r for r in rows if r.method == "byol"]
    simclr = figures.ResultRow(**{**byol[0].__dict__, "method": "simclr"})
    assert figures.grid_method([simclr, *byol]) == "byol"
    with pytest.raises(ValueError, match="no row of method 'simclr'"):
        figures.split_results(rows, "simclr")


def test_method_and_backbone_labels() -> None:
    assert figures.method_label("co_byol") == "CO-BYOL"
    assert figures.method_label("co_simclr") == "CO-SimCLR"
    assert figures.method_label("byol") == "BYOL"
    assert figures.backbone_label("rf_resnet50_rf43") == "RF-ResNet50 (rf43)"
    assert figures.backbone_label("resnet50") == "ResNet-50"


def test_curve_rows_average_repeated_runs(table: Path) -> None:
    rows = figures.read_results(table)
    again = [*rows, figures.ResultRow(**{**rows[0].__dict__, "linear_top1": rows[0].linear_top1 + 2.0})]
    points = figures.curve_rows(again)
    assert len(points) == len(ROWS)  # the repeated cell is one point
    first = next(p for p in points if p["backbone"] == "rf_resnet50_rf43" and p["c_min"] == 0.2)
    assert first["n_runs"] == 2
    assert first["linear_top1"] == pytest.approx(rows[0].linear_top1 + 1.0)
    assert [p["role"] for p in points] == ["grid"] * 6 + ["reference"] * 2
    grid_points = [p for p in points if p["role"] == "grid"]
    assert grid_points == sorted(grid_points, key=lambda p: (p["c_min"], p["rf"]))


def test_plot_accuracy_vs_rf(table: Path, tmp_path: Path) -> None:
    rows = figures.read_results(table)
    png = tmp_path / "fig3a.png"
    fig = figures.plot_accuracy_vs_rf(rows, png)
    assert png.is_file() and png.stat().st_size > 0
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [43, 155, 427]
    lines = ax.get_lines()
    curves = [ln for ln in lines if ln.get_linestyle() == "-"]
    refs = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert len(curves) == 2 and len(refs) == 2  # one curve per c_min, one reference per BYOL run
    c02 = next(ln for ln in curves if "0.2" in ln.get_label())
    assert list(c02.get_xdata()) == [43, 155, 427]
    assert list(c02.get_ydata()) == pytest.approx([50 + rf / 10 + 2 for rf in (43, 155, 427)])
    ref07 = next(ln for ln in refs if "0.7" in ln.get_label())
    assert list(ref07.get_ydata()) == [65.0, 65.0]
    assert "BYOL ResNet-50" in ref07.get_label()


def test_plot_accuracy_vs_cmin(table: Path, tmp_path: Path) -> None:
    rows = figures.read_results(table)
    png = tmp_path / "fig5.png"
    fig = figures.plot_accuracy_vs_cmin(rows, png, metric="knn_top1")
    assert png.is_file()
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 4  # three RFs and the BYOL reference
    ref = next(ln for ln in lines if ln.get_label().startswith("BYOL"))
    assert list(ref.get_xdata()) == [0.2, 0.7]
    assert list(ref.get_ydata()) == [55.0, 60.0]  # knn_top1 = linear_top1 - 5
    assert ax.get_ylabel() == figures.METRICS["knn_top1"]


def _similarity(seed: int, shared: float):
    """A SimilarityResult of 20 random images with 4 local representations each; ``shared`` mixes an
    image-level vector into every local one (more shared content: higher intra-image similarity)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(20, 1, 16, generator=gen)
    local = shared * image + torch.randn(20, 4, 16, generator=gen)
    return similarity_from_features(local.mean(1), local)


def test_plot_similarity_panels(tmp_path: Path) -> None:
    results = {"BYOL": _similarity(0, 0.5), "CO-BYOL": _similarity(1, 3.0)}
    png = tmp_path / "fig3b.png"
    fig = figures.plot_similarity_panels(results, png, max_points=50)
    assert png.is_file()
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 2
    for ax, (label, res) in zip(axes, results.items(), strict=True):
        assert ax.get_title() == f"{label}: C = {res.pearson_c:.2f}"
        (vline,) = ax.get_lines()
        assert vline.get_xdata()[0] == pytest.approx(res.intra_local_mean)
        assert len(ax.collections[0].get_offsets()) == 50  # subsampled for drawing
    assert results["CO-BYOL"].intra_local_mean > results["BYOL"].intra_local_mean
    with pytest.raises(ValueError):
        figures.plot_similarity_panels({})


def test_load_images(tmp_path: Path) -> None:
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 60), 128, dtype=np.uint8)).save(grey)
    x = figures.load_images(["skimage:astronaut", grey], 24)
    assert x.shape == (2, 3, 24, 24) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.allclose(x[1], torch.full_like(x[1], 128 / 255))  # grey -> three equal channels
    with pytest.raises(ValueError, match="no sample image 'nonesuch'"):
        figures.load_images(["skimage:nonesuch"], 24)
    with pytest.raises(FileNotFoundError):
        figures.load_images([tmp_path / "missing.png"], 24)
    with pytest.raises(ValueError):
        figures.load_images([], 24)


def test_rf_centres_follow_the_rf_calculator() -> None:
    from cossl_train.backbones import backbone_info

    cfg = load_config(None, ["backbone.name=resnet18", "backbone.small_image=true", "backbone.width=8"])
    info = backbone_info("resnet18", small_image=True, width=8, input_size=20)
    assert info["feature_size"] == 3
    centres = figures.rf_centres(cfg, [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (1.0, 1.0)], 20)
    step, first = info["jump"], info["start"] + (info["rf"] - 1) / 2
    expected = [first, first + step, first + 2 * step]
    assert centres[0] == (max(expected[0], 0.0), max(expected[0], 0.0))
    assert centres[1][1] == pytest.approx(expected[1])
    assert centres[2] == pytest.approx((expected[1], expected[1]))
    assert all(0 <= v <= 19 for c in centres for v in c)  # clipped to the image


def test_erf_stats() -> None:
    delta = np.zeros((9, 9))
    delta[2, 5] = 3.0
    s = figures.erf_stats(delta)
    assert s["centroid"] == [2.0, 5.0] and s["rms_radius"] == 0.0 and s["peak"] == 3.0
    assert s["area90"] == pytest.approx(1 / 81)
    uniform = figures.erf_stats(np.ones((10, 10)))
    assert uniform["centroid"] == [4.5, 4.5]
    assert uniform["area90"] == pytest.approx(0.9)
    assert figures.erf_stats(np.zeros((4, 4)))["rms_radius"] is None


def test_plot_erf_comparison(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = torch.rand(2, 3, 12, 12)
    positions = [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]
    maps = {"BYOL": rng.random((2, 3, 12, 12)), "CO-BYOL": rng.random((2, 3, 12, 12))}
    centres = {"BYOL": [(0.0, 0.0), (6.0, 6.0), (11.0, 11.0)]}
    png = tmp_path / "fig4.png"
    fig = figures.plot_erf_comparison(images, maps, positions, png, centres=centres)
    assert png.is_file()
    assert len(fig.axes) == 2 * 2 * (3 + 1)  # (image, model) rows x (image + positions) columns
    assert fig.axes[1].get_title() == "(0, 0)"
    assert fig.axes[0].get_ylabel() == "image 1\nBYOL"
    assert fig.axes[4].get_ylabel() == "image 1\nCO-BYOL"
    assert len(fig.axes[2].get_lines()) == 1 and not fig.axes[6].get_lines()  # crosses for BYOL only
    # images per model (different resolutions) are accepted
    figures.plot_erf_comparison({"a": images, "b": torch.rand(2, 3, 8, 8)},
                                {"a": maps["BYOL"], "b": rng.random((2, 3, 8, 8))}, positions)
    with pytest.raises(ValueError, match="do not match"):
        figures.plot_erf_comparison(images, {"a": rng.random((2, 2, 12, 12))}, positions)
    with pytest.raises(ValueError, match="at least one model"):
        figures.plot_erf_comparison(images, {}, positions)
