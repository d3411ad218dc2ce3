"""Report section: effective receptive fields (Figure 4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cossl_analysis.analyses.erf import erf_map, erf_stats, position_indices, rf_centres
from cossl_analysis.registry import section
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.loading import Model
from cossl_analysis.report.paired import MARGINS
from cossl_analysis.report.session import FigureRef, Metric, Section, Session, Table, pm_rows
from cossl_analysis.viz.erf import normalised_maps, plot_erf_comparison, plot_erf_means
from cossl_train.backbones import list_backbones


def _record(session: Session, model: Model) -> dict[str, Any]:
    cfg = session.config.erf
    params = {"positions": [list(p) for p in cfg.positions], "images": cfg.images}

    def compute() -> dict[str, Any]:
        images = session.data.pixels[: cfg.images]
        maps = erf_map(model.encoder, images, cfg.positions, average=False, chunk_size=cfg.chunk_size,
                       progress=session.progress)
        return {"maps": maps, "feature_map": list(session.feature_map(model))}

    return session.cached(model, "erf", params, compute)


def zero_erf_note(session: Session, model: Model, maps: np.ndarray) -> str | None:
    """Why the ERFs of ``model`` are zero, when they are, checked on the model itself: the channel
    sum of its local representations may be the same for every input, and then its gradient -- the
    ERF as defined here -- vanishes (what is computed is rounding). None when nothing is to explain."""
    import torch

    from cossl_analysis.analyses._common import model_device, model_dtype
    from cossl_train.evaluate import eval_mode

    real = session.data.pixels[:2]
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0))
    x = torch.cat([real, noise]).to(model_device(model.encoder), model_dtype(model.encoder))
    with eval_mode(model.encoder), torch.no_grad():
        fmap = model.encoder(x).double()
    sums = fmap.sum(dim=1)
    if (sums - sums.mean()).abs().max() <= 1e-5 * max(float(fmap.abs().max()), 1e-12):
        return (f"{model.label}: its ERFs are zero (up to rounding: the largest value is {float(maps.max()):.1g}) "
                "because the channel sum of its local representations is the same for every input "
                f"({float(sums.mean()):.2g} here, on real and noise images), so its gradient, the ERF as defined here, "
                "vanishes. A final LayerNorm whose gains are all equal does this: a randomly initialised ViT (gain 1, "
                "bias 0: every position's channels sum to 0). Trained gains differ, and so does the ERF.")
    if not maps.any():
        return (f"{model.label}: every ERF is zero: the channel sum of its local representations does not change "
                "with the input pixels at these images.")
    return None


@section("erf")
def erf_section(session: Session) -> Section:
    cfg = session.config.erf
    if cfg.images > len(session.data):
        session.note(f"erf.images={cfg.images} asked for, but there are {len(session.data)} evaluation images: the "
                     f"ERFs are computed on {len(session.data)}")
    records = {m.label: _record(session, m) for m in session.models}
    per_model = {}
    for m in session.models:
        maps, (h, w) = np.asarray(records[m.label]["maps"]), records[m.label]["feature_map"]
        np.save(session.path("erf", f"{m.slug}_maps.npy"), maps)
        mean = maps.mean(axis=0)
        per_model[m.label] = {"num_images": len(maps), "feature_map": [h, w], "positions": [
            {"position": list(p), "index": list(ij), **erf_stats(mean[t])}
            for t, (p, ij) in enumerate(zip(cfg.positions, position_indices(cfg.positions, h, w), strict=True))]}
        note = zero_erf_note(session, m, maps)
        if note is not None:
            per_model[m.label]["note"] = note
    # figure 4 draws one model per group, named with its seed; the means average every seed's maps
    first = {f"{g} ({session.seed_name(models[0])})" if session.seed_name(models[0]) != g else g: models[0]
             for g, models in session.groups().items()}
    show = min(cfg.show, cfg.images, len(session.data))
    images = session.data.pixels[:show]
    fig4, fig_mean = session.path("erf", "figure4.png"), session.path("erf", "erf_mean.png")
    # the theoretical receptive fields of the backbones the RF calculator knows (not external models)
    centres = {g: rf_centres(m.config, cfg.positions, images.shape[-1]) for g, m in first.items()
               if m.config is not None and m.config.backbone.name in list_backbones()}
    save_figure(plot_erf_comparison(images, {g: np.asarray(records[m.label]["maps"])[:show] for g, m in first.items()},
                                    cfg.positions, centres=centres), fig4, dpi=100)
    # each seed's image-averaged maps scaled to their maximum before the seeds are averaged: the figure is
    # about shape and extent, and one seed's larger gradients would otherwise stand for the group
    def scaled_mean(m: Model) -> np.ndarray:
        return normalised_maps(np.asarray(records[m.label]["maps"]).mean(axis=0)[None])[0]

    means = {session.series_name(g): np.mean([scaled_mean(m) for m in models], axis=0)
             for g, models in session.groups().items()}
    save_figure(plot_erf_means(means, cfg.positions), fig_mean, dpi=100)
    radius = session.per_group(lambda m: [p["rms_radius"] for p in per_model[m.label]["positions"]])
    header = ["group", *[f"({p[0]:g}, {p[1]:g})" for p in cfg.positions]]
    write_json(per_model, session.path("erf", "erf.json"))
    n_img = per_model[session.models[0].label]["num_images"]
    return Section(
        text=[f"Gradient magnitude of the channel sum of the local representation at each normalised position, "
              f"with respect to the input pixels (summed over colour channels), on the first {n_img} evaluation "
              f"images. The first figure shows one seed of each group (named beside its rows) on {show} image(s) "
              "(crosses: centres of the theoretical receptive fields), the second the maps averaged over the "
              "images and the group's seeds; the table gives the RMS radius (pixels) of each model's averaged map, "
              "mean ± std over seeds.",
              *[r["note"] for r in per_model.values() if "note" in r]],
        figures=[FigureRef(session.rel(fig4), "ERFs per image, one seed of each group (named)"),
                 FigureRef(session.rel(fig_mean), "ERFs averaged over the images and each group's seeds")],
        tables=[Table("ERF RMS radius (px) per position", header, pm_rows(radius, digits=2))],
        files=["erf/erf.json", *[f"erf/{m.slug}_maps.npy" for m in session.models]],
        summary=per_model,
        metrics=[Metric("ERF RMS radius (px)", {m.label: _mean_radius(per_model[m.label]) for m in session.models},
                        digits=2, margin=MARGINS["radius"])],
    )


def _mean_radius(record: dict[str, Any]) -> float | None:
    """Mean RMS radius over the positions (None when every map is zero)."""
    radii = [p["rms_radius"] for p in record["positions"] if p["rms_radius"] is not None]
    return float(np.mean(radii)) if radii else None
