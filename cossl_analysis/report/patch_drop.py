"""Report section: patch dropping."""

from __future__ import annotations

from typing import Any

from cossl_analysis.analyses.patch_drop import PatchDropResult, patch_drop_from_features
from cossl_analysis.config import PatchDropConfig
from cossl_analysis.registry import analysis
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.loading import Model
from cossl_analysis.report.session import PCT, FigureRef, Section, Session, Table, pm, pm_rows, seed_curves
from cossl_analysis.viz.patch_drop import dropped_axis, plot_patch_drop
from cossl_train.encoder import pool_head


@analysis("patch_drop", title="Patch dropping", config=PatchDropConfig,
          needs_probe=lambda cfg: cfg.patch_drop.accuracy, without_probe="patch_drop.accuracy=false",
          help="global representation and probe accuracy as local representations are dropped",
          writes="`patch_drop/patch_drop.png`, `patch_drop/patch_drop.json`")
def patch_drop_section(session: Session) -> Section:
    cfg, seed = session.config.patch_drop, session.config.seed
    params = {"fractions": list(cfg.fractions), "mode": cfg.mode, "order": cfg.order, "seed": seed,
              "accuracy": cfg.accuracy}

    def compute(m: Model) -> dict[str, Any]:
        return patch_drop_from_features(
            session.features(m)[1], cfg.fractions, cfg.mode, cfg.order, seed,  # type: ignore[arg-type]
            pool_head(m.encoder), m.probe if cfg.accuracy else None, session.data.labels if cfg.accuracy else None,
            session.feature_map(m), session.config.batch_size).to_dict()

    results = {m.label: session.cached(m, "patch_drop", params, lambda m=m: compute(m)) for m in session.models}
    means, stds = seed_curves(results, session, ("cosine_mean", "accuracy"))
    spread = session.spread_name("std over images")
    png = session.path("patch_drop", "patch_drop.png")
    curves = {g: PatchDropResult.from_dict(r) for g, r in means.items()}
    bands = {g: PatchDropResult.from_dict(r) for g, r in stds.items()} if spread == "std over seeds" else None
    save_figure(plot_patch_drop(curves, bands, spread), png)
    write_json({"per_checkpoint": results, "per_group_mean": means, "per_group_std": stds},
               session.path("patch_drop", "patch_drop.json"))
    _, names = dropped_axis(PatchDropResult.from_dict(next(iter(results.values()))))
    cos = session.per_group(lambda m: results[m.label]["cosine_mean"])
    tables = [Table("cosine to the intact global representation", ["group", *names], pm_rows(cos))]
    headline = {g: {"cosine, all but one dropped": pm([seed[-1] for seed in v])} for g, v in cos.items()}
    if cfg.accuracy:
        acc = session.per_group(lambda m: results[m.label]["accuracy"])
        tables.append(Table("linear-probe top-1 (%)", tables[0].header, pm_rows(acc, PCT, 1)))
    return Section(
        text=[f"A fraction of the local representations is dropped after the encoder ({cfg.mode} order) and the "
              "global representation is pooled again from the kept positions. The x axis is the fraction actually "
              "dropped, k / P (at least one position is always kept: the last point is 'all but one'). Band: "
              f"{spread}; tables: mean ± std over seeds."],
        figures=[FigureRef(session.rel(png), "cosine and probe accuracy against the fraction dropped")],
        tables=tables, files=["patch_drop/patch_drop.json"], summary={"per_checkpoint": results}, headline=headline,
    )
