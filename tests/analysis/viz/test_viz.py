"""The figures (cossl_analysis.viz), on synthetic inputs: no training here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cossl_analysis.analyses.similarity import similarity_from_features
from cossl_analysis.report import save_figure
from cossl_analysis.viz.erf import plot_erf_comparison
from cossl_analysis.viz.results import backbone_label, plot_accuracy_vs_cmin, plot_accuracy_vs_rf
from cossl_analysis.viz.similarity import plot_similarity_panels
from cossl_train.experiments.results import METRICS, read_results
from cossl_train.methods import display_name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_method_and_backbone_labels() -> None:
    assert display_name("co_byol") == "CO-BYOL"
    assert display_name("co_simclr") == "CO-SimCLR"
    assert display_name("byol") == "BYOL"
    assert backbone_label("rf_resnet50_rf43") == "RF-ResNet50 (rf43)"
    assert backbone_label("resnet50") == "ResNet-50"


def test_plot_accuracy_vs_rf(results_table: Path, tmp_path: Path) -> None:
    rows = read_results(results_table)
    png = tmp_path / "fig3a.png"
    fig = plot_accuracy_vs_rf(rows)
    assert save_figure(fig, png).read_bytes()[:8] == PNG_MAGIC
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


def test_plot_accuracy_vs_cmin(results_table: Path, tmp_path: Path) -> None:
    rows = read_results(results_table)
    png = tmp_path / "fig5.png"
    fig = plot_accuracy_vs_cmin(rows, metric="knn_top1")
    assert save_figure(fig, png).is_file()
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 4  # three RFs and the BYOL reference
    ref = next(ln for ln in lines if ln.get_label().startswith("BYOL"))
    assert list(ref.get_xdata()) == [0.2, 0.7]
    assert list(ref.get_ydata()) == [55.0, 60.0]  # knn_top1 = linear_top1 - 5
    assert ax.get_ylabel() == METRICS["knn_top1"]


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
    fig = plot_similarity_panels(results, max_points=50)
    assert save_figure(fig, png).is_file()
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 2
    for ax, (label, res) in zip(axes, results.items(), strict=True):
        assert ax.get_title() == f"{label}: C = {res.pearson_c:.2f}"
        (vline,) = ax.get_lines()
        assert vline.get_xdata()[0] == pytest.approx(res.intra_local_mean)
        assert len(ax.collections[0].get_offsets()) == 50  # subsampled for drawing
    assert results["CO-BYOL"].intra_local_mean > results["BYOL"].intra_local_mean
    with pytest.raises(ValueError):
        plot_similarity_panels({})


def test_plot_erf_comparison(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = torch.rand(2, 3, 12, 12)
    positions = [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]
    maps = {"BYOL": rng.random((2, 3, 12, 12)), "CO-BYOL": rng.random((2, 3, 12, 12))}
    centres = {"BYOL": [(0.0, 0.0), (6.0, 6.0), (11.0, 11.0)]}
    png = tmp_path / "fig4.png"
    fig = plot_erf_comparison(images, maps, positions, centres=centres)
    assert save_figure(fig, png).is_file()
    assert len(fig.axes) == 2 * 2 * (3 + 1)  # (image, model) rows x (image + positions) columns
    assert fig.axes[1].get_title() == "(0, 0)"
    assert fig.axes[0].get_ylabel() == "image 1\nBYOL"
    assert fig.axes[4].get_ylabel() == "image 1\nCO-BYOL"
    assert len(fig.axes[2].get_lines()) == 1 and not fig.axes[6].get_lines()  # crosses for BYOL only
    # images per model (different resolutions) are accepted
    plot_erf_comparison({"a": images, "b": torch.rand(2, 3, 8, 8)},
                                {"a": maps["BYOL"], "b": rng.random((2, 3, 8, 8))}, positions)
    with pytest.raises(ValueError, match="do not match"):
        plot_erf_comparison(images, {"a": rng.random((2, 2, 12, 12))}, positions)
    with pytest.raises(ValueError, match="at least one model"):
        plot_erf_comparison(images, {}, positions)


def test_every_plot_draws_on_given_axes_and_returns_their_figure() -> None:
    """A result (or label -> result) and optional axes in, that figure out: the analyses' plots
    compose into a caller's figure."""
    from matplotlib.figure import Figure

    from cossl_analysis.analyses.adversarial import AdversarialResult
    from cossl_analysis.analyses.co_objective import ObjectiveResult
    from cossl_analysis.analyses.corruption import corruption_summary
    from cossl_analysis.analyses.internal_corruption import InternalCorruptionResult
    from cossl_analysis.analyses.patch_drop import patch_drop_from_features
    from cossl_analysis.viz.co_objective import plot_objective_maps
    from cossl_analysis.viz.erf import plot_erf_means
    from cossl_analysis.viz.internal_corruption import plot_internal_corruption
    from cossl_analysis.viz.patch_drop import plot_patch_drop
    from cossl_analysis.viz.robustness import plot_adversarial, plot_corruption

    g = torch.Generator().manual_seed(0)
    local = torch.randn(6, 4, 3, generator=g)
    sim = similarity_from_features(local.mean(1), local)
    drop = patch_drop_from_features(local, fractions=[0, 0.5, 1])
    internal = InternalCorruptionResult([0.0, 0.5], [0.5, 0.25], "mask", "", 0, 6, 0.5)
    corrupted = corruption_summary(0.5, {"gaussian_noise": {1: 0.4, 3: 0.2}})
    attacked = AdversarialResult([1.0], {"fgsm": [0.1]}, {"fgsm": 0.1}, 0.5, 1, 0, 6)
    objective = ObjectiveResult("local heads", 0.5, 0.1, 0.4, 0.2, np.zeros((2, 2)), np.ones((2, 2)), 0.6, 0.5, 5)
    cases = [
        (1, lambda ax: plot_similarity_panels({"a": sim}, axes=ax)),
        (1, lambda ax: plot_patch_drop({"a": drop}, axes=ax)),  # cosine only: no probe
        (1, lambda ax: plot_internal_corruption({"a": internal}, ax=ax[0])),
        (1, lambda ax: plot_corruption(corrupted, ax=ax[0])),
        (1, lambda ax: plot_adversarial({"a": attacked}, axes=ax)),
        (2, lambda ax: plot_objective_maps({"a": objective}, axes=ax)),
        (4, lambda ax: plot_erf_means({"a": np.random.default_rng(0).random((4, 8, 8))}, [(0, 0)] * 4, axes=ax)),
    ]
    for n, plot in cases:
        fig = Figure()
        axes = list(fig.subplots(1, n, squeeze=False)[0])
        assert plot(axes) is fig
        assert all(ax.has_data() for ax in axes)


def _text_boxes(fig) -> list[tuple[str, object]]:  # noqa: ANN001
    """(text, its box in pixels) of every title, axis label and suptitle drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    texts += [fig._suptitle] if fig._suptitle is not None else []
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]


def _overlaps(fig) -> list[tuple[str, str]]:  # noqa: ANN001
    boxes = _text_boxes(fig)
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


def _objective(retrieval_map: np.ndarray, cosine_map: np.ndarray, n: int = 250) -> object:
    from cossl_analysis.analyses.co_objective import ObjectiveResult

    return ObjectiveResult("global heads at every position (never trained for it)", float(cosine_map.mean()), 0.1,
                           float(retrieval_map.mean()), 1 / n, cosine_map, retrieval_map, 0.6, 0.5, n)


def test_objective_maps_draw_the_seed_mean_from_chance_with_the_seeds_named() -> None:
    from cossl_analysis.viz.co_objective import plot_objective_maps

    a = _objective(np.array([[0.01, 0.02], [0.03, 0.04]]), np.full((2, 2), 0.40))
    b = _objective(np.array([[0.03, 0.02], [0.01, 0.00]]), np.full((2, 2), 0.44))
    c = _objective(np.array([[0.05, 0.01], [0.01, 0.01]]), np.full((2, 2), 0.30))
    fig = plot_objective_maps({"CO-BYOL": [a, b], "BYOL": c}, {"CO-BYOL": ["seed 0", "seed 1"], "BYOL": ["seed 3"]})
    shown = {ax.get_title().splitlines()[0]: ax for ax in fig.axes if ax.images and ax.get_title()}
    assert "mean of 2 seeds: seed 0, seed 1" in shown["CO-BYOL"].get_title()
    assert shown["BYOL"].get_title().endswith("seed 3")
    retrieval = [ax for ax in fig.axes if ax.images and "chance" in ax.get_xlabel()]
    first = retrieval[0].images[0]
    np.testing.assert_allclose(first.get_array(), [[2.0, 2.0], [2.0, 2.0]])  # 100 x the mean of the two seeds
    # the colours run from chance (0.4 %) to the largest value drawn (5 %), not over 0-100 %
    assert first.get_clim() == pytest.approx((0.4, 5.0))
    cosine = [ax for ax in fig.axes if ax.images and "own" in ax.get_xlabel()][0].images[0]
    assert cosine.get_clim() == pytest.approx((0.30, 0.42))  # smallest to largest drawn (0.42: the CO mean)
    assert not _overlaps(fig)


def test_titles_of_neighbouring_panels_never_overlap() -> None:
    results = {"BYOL": _similarity(0, 0.5), "CO-BYOL": _similarity(1, 3.0)}
    long = "global: spatial mean of the map, then the pool MLP (similarity.global=head)"
    titles = {g: f"{g}: C = 0.65 ± 0.05 over 2 seeds\nscatter: {g} seed=0 (first seed)\n{long}" for g in results}
    assert not _overlaps(plot_similarity_panels(results, titles=titles))


def test_panels_name_their_band_and_show_a_single_point_with_its_error_bar() -> None:
    from cossl_analysis.viz.panels import Panel, Series, plot_panels

    panel = Panel("clean top-1 against c_min", "c_min", "top-1 (%)", hline=10.0, band="std over seeds",
                  xlim=(0.0, 1.0), series=[Series("A (2 seeds per point)", [0.08], [32.0], [3.0]),
                                           Series("B (2 seeds per point)", [0.08, 0.5], [28.0, 30.0], [1.0, 2.0])])
    (ax,) = plot_panels([panel]).axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "band: std over seeds" in legend and "chance" in legend
    (bar,) = ax.containers  # the single point's error bar; B's band is a band
    np.testing.assert_allclose(bar.lines[2][0].get_segments()[0][:, 1], [29.0, 35.0])
    assert ax.get_xlim() == (0.0, 1.0)
    bare = plot_panels([Panel("t", "x", "y", band="std over seeds", series=[Series("A (seed 0)", [0, 1], [1, 2])])])
    assert not any("band" in t.get_text() for t in bare.axes[0].get_legend().get_texts())  # no band, not named


def test_corruption_bars_have_error_bars_a_title_and_chance_named() -> None:
    from cossl_analysis.viz.robustness import plot_corruption_bars

    values = {"A (2 seeds)": [30.0, 20.0], "B (seed 0)": [25.0, 15.0]}
    fig = plot_corruption_bars(["gaussian_noise", "contrast"], values, 10.0, errors={"A (2 seeds)": [2.0, 1.0]},
                               title="top-1 per corruption")
    (ax,) = fig.axes
    assert ax.get_title() == "top-1 per corruption" and "std over seeds" in ax.get_xlabel()
    assert "chance" in [t.get_text() for t in ax.get_legend().get_texts()]
    with_errors = [c for c in ax.containers if getattr(c, "errorbar", None) is not None]
    assert len(with_errors) == 1  # A's bars only


def test_patch_drop_accuracy_panel_has_chance() -> None:
    from cossl_analysis.analyses.patch_drop import patch_drop_from_features
    from cossl_analysis.viz.patch_drop import drop_panels

    local = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0))
    drop = patch_drop_from_features(local, fractions=[0, 0.5, 1], probe=torch.nn.Linear(3, 2),
                                    labels=torch.arange(6) % 2)
    cosine, accuracy = drop_panels({"a": drop}, chance=50.0)
    assert accuracy.hline == 50.0 and cosine.hline is None and cosine.band == "std over images"
