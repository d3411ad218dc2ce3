"""Report section: patch dropping."""

from __future__ import annotations

import dataclasses
from typing import Any

from cossl_analysis.analyses.patch_drop import PatchDropResult, patch_drop_from_features
from cossl_analysis.registry import section
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.loading import Model
from cossl_analysis.report.paired import MARGINS
from cossl_analysis.report.session import (
    BINOMIAL_NOTE,
    PCT,
    FigureRef,
    Metric,
    Section,
    Session,
    Table,
    pm_rows,
    seed_curves,
)
from cossl_analysis.viz.patch_drop import dropped_axis, plot_patch_drop
from cossl_train.encoder import pool_head


def _check(session: Session) -> None:
    session.require_map("patch dropping")


def repoolable(m: Model) -> bool:
    """Whether ``m``'s global is head(mean over positions), so a subset of positions re-pools; a
    class token (or max or attention pooling) is not, and such a model is left out (docs/analysis.md)."""
    return bool(getattr(m.encoder, "poolable_subsets", True))


def left_out_text(models: list[Model]) -> str:
    """Why models whose global cannot be re-pooled are left out, naming them."""
    if not models:
        return ""
    which = "; ".join(f"{m.label} ({m.global_description})" for m in models)
    fix = " (external models: external.global_pool=mean analyses the mean of the patch tokens instead)" if any(
        m.is_external for m in models) else ""
    return (f" Left out: {which}: their global representation is not the mean of the positions, so it cannot be "
            f"re-pooled from the kept ones, and patch dropping refuses them rather than average something else"
            f"{fix}.")


def last_point_name(result: PatchDropResult) -> str:
    """The last fraction in words: "all but one" only where it really keeps one position."""
    if result.all_but_one[-1]:
        return "all but one"
    return f"{result.num_dropped[-1]} of {result.num_positions} ({result.fraction_dropped[-1]:.0%})"


def drop_params(session: Session, accuracy: bool) -> dict[str, Any]:
    cfg = session.config.patch_drop
    return {"fractions": list(cfg.fractions), "mode": cfg.mode, "order": cfg.order, "seed": session.config.seed,
            "accuracy": accuracy}


def drop_result(session: Session, m: Model, accuracy: bool | None = None) -> dict[str, Any] | None:
    """The patch-drop analysis of ``m`` with the run's settings (stored); ``accuracy`` (default:
    ``patch_drop.accuracy``) scores the probe too. None for a model left out (:func:`repoolable`)."""
    if not repoolable(m):
        return None
    cfg = session.config.patch_drop
    accuracy = cfg.accuracy if accuracy is None else accuracy

    def compute() -> dict[str, Any]:
        return patch_drop_from_features(
            session.features(m)[1], cfg.fractions, cfg.mode, cfg.order, session.config.seed,  # type: ignore[arg-type]
            pool_head(m.encoder), m.probe if accuracy else None, session.data.labels if accuracy else None,
            session.feature_map(m), session.config.batch_size).to_dict()

    return session.cached(m, "patch_drop", drop_params(session, accuracy), compute)


@section("patch_drop", check=_check)
def patch_drop_section(session: Session) -> Section:
    cfg = session.config.patch_drop
    left_out = [m for m in session.models if not repoolable(m)]
    if len(left_out) == len(session.models):
        return Section(text=["Patch dropping re-pools the global representation from the kept positions." +
                             left_out_text(left_out)])
    if left_out:  # the section over the models it applies to
        session = dataclasses.replace(session, models=[m for m in session.models if repoolable(m)])
    results = {m.label: drop_result(session, m) for m in session.models}
    means, stds = seed_curves(results, session, ("cosine_mean", "accuracy"))
    spread = session.spread_name("std over images")
    png = session.path("patch_drop", "patch_drop.png")
    curves = {session.series_name(g): PatchDropResult.from_dict(r) for g, r in means.items()}
    bands = ({session.series_name(g): PatchDropResult.from_dict(r) for g, r in stds.items()}
             if spread == "std over seeds" else None)
    save_figure(plot_patch_drop(curves, bands, spread, chance=session.chance if cfg.accuracy else None), png)
    write_json({"per_checkpoint": results, "per_group_mean": means, "per_group_std": stds},
               session.path("patch_drop", "patch_drop.json"))
    some = PatchDropResult.from_dict(next(iter(results.values())))
    _, names = dropped_axis(some)
    last = last_point_name(some)
    cos = session.per_group(lambda m: results[m.label]["cosine_mean"])
    tables = [Table("cosine to the intact global representation", ["group", *names], pm_rows(cos))]
    metrics = [Metric(f"cosine, {last} dropped", {m.label: results[m.label]["cosine_mean"][-1]
                                                   for m in session.models}, margin=MARGINS["cosine"])]
    if cfg.accuracy:
        acc = session.per_group(lambda m: results[m.label]["accuracy"])
        probes = {g: session.probe_text(models) for g, models in session.groups().items()}
        rows = [[*row, probes[row[0]]] for row in pm_rows(acc, PCT, 1, len(session.data))]
        tables.append(Table("linear-probe top-1 (%)", [*tables[0].header, "probe"], rows, BINOMIAL_NOTE))
    globals_used = "; ".join(sorted({m.global_description for m in session.models}))
    last_text = ("the last point is 'all but one'" if some.all_but_one[-1] else
                 f"patch_drop.fractions ends below 1, so the last point drops {last} positions")
    return Section(
        text=[f"A fraction of the local representations is dropped after the encoder ({cfg.mode} order) and the "
              f"global representation ({globals_used}) is pooled again from the kept positions. The x axis is the "
              f"fraction actually dropped, k / P (at least one position is always kept; {last_text}). Band: "
              f"{spread}; tables: mean ± std over seeds." + left_out_text(left_out)],
        figures=[FigureRef(session.rel(png), "cosine and probe accuracy against the fraction dropped")],
        tables=tables, files=["patch_drop/patch_drop.json"], summary={"per_checkpoint": results}, metrics=metrics,
    )
