"""Report section: the CO objective. Does the CO term meet its own objective on held-out images, and
do Pearson C and patch dropping read differently in the heads' space than in the backbone's?"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from cossl_analysis.analyses.co_objective import (
    ObjectiveResult,
    co_objective,
    head_space_features,
    head_space_pool_head,
)
from cossl_analysis.analyses.patch_drop import patch_drop_from_features
from cossl_analysis.analyses.similarity import similarity_from_features
from cossl_analysis.registry import section
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.loading import Model, weights_fingerprint
from cossl_analysis.report.paired import MARGINS, comparisons
from cossl_analysis.report.patch_drop import drop_result, last_point_name, repoolable
from cossl_analysis.report.session import PCT, FigureRef, Metric, Section, Session, Table, pm
from cossl_analysis.report.similarity import similarity_result
from cossl_analysis.viz.co_objective import plot_objective_maps
from cossl_train.config import AugmentConfig
from cossl_train.paired import Paired, paired

#: the second view, in words (the section and docs say which views were used)
VIEWS = ("view a: the evaluation images as they are; view b: the same images through the training augmentation of "
         "the first checkpoint's config (augment.*: RandomResizedCrop(c_min, c_max) + flip, then view 1's photometric "
         "pipeline: colour jitter, grayscale, blur, solarisation), drawn at fixed seeds (seed, image index)")


def second_view(images: Tensor, augment: AugmentConfig, seed: int) -> Tensor:
    """View b of uint8 (N, 3, R, R) images: the training crop (second crop of ``TwoViewCrop``) and
    view 1's photometric pipeline (``BatchPhotometric``), seeded by (``seed``, image index) and
    ``seed``; float in [0, 1]. The same for every model and every run."""
    from cossl_train.augment import BatchPhotometric, TwoViewCrop

    crop = TwoViewCrop(augment)
    crops = torch.stack([crop(img, seed=seed * 1_000_003 + i)[1] for i, img in enumerate(images)])
    return BatchPhotometric(augment, view=1)(crops, seed=seed)


def _views(session: Session) -> tuple[Tensor, Tensor]:
    """(view a, view b) on the session's device, made once per run."""
    if "co_objective_views" not in session.scratch:
        assert session.eval_config is not None
        b = second_view(session.data.images, session.eval_config.augment, session.config.seed)
        session.scratch["co_objective_views"] = (session.data.pixels, b)
    a, b = session.scratch["co_objective_views"]
    return a.to(session.device), b.to(session.device)


#: bump when the computation behind a stored record changes (what a key maps to)
COMPUTATION = 3  # 3: global heads on local rows read with the rows' own statistics, over all images at once


def record_params(session: Session, method_fingerprint: str) -> dict[str, Any]:
    """Everything the stored record depends on besides the checkpoint's encoder and probe and the images
    (in the store key already): the whole method's weights, the second view's augmentation (every
    ``augment.*`` setting of the evaluation config), the seed, the batch size (the heads' batch
    statistics) and the similarity and patch-drop settings of the heads' space."""
    cfg = session.config
    assert session.eval_config is not None
    return {"method": method_fingerprint, "computation": COMPUTATION, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "augment": dataclasses.asdict(session.eval_config.augment),
            "similarity": [cfg.similarity.mode, cfg.similarity.max_pairs],
            "patch_drop": [list(cfg.patch_drop.fractions), cfg.patch_drop.mode, cfg.patch_drop.order]}


def _record(session: Session, m: Model) -> dict[str, Any]:
    """Everything the section shows for one checkpoint (stored: :func:`record_params`)."""
    from cossl_train.checkpoint import load_method

    assert m.path is not None
    method = load_method(m.path, session.device)
    cfg = session.config
    params = record_params(session, weights_fingerprint(method))

    def compute() -> dict[str, Any]:
        a, b = _views(session)
        bs = cfg.batch_size
        own = co_objective(method, a, b, bs)
        floor = co_objective(method, a, b, bs, path="global")
        h, w = session.feature_map(m)
        glob, loc = head_space_features(method, a, bs)
        heads = (similarity_from_features(glob.cpu(), loc.cpu(), mode=cfg.similarity.mode,  # type: ignore[arg-type]
                                          seed=cfg.seed, max_pairs=cfg.similarity.max_pairs)
                 if loc.shape[1] >= 2 else None)
        pd = cfg.patch_drop
        # re-pooling kept positions needs a global that is head(mean): not a class token
        drop = patch_drop_from_features(session.features(m)[1], pd.fractions, pd.mode, pd.order,  # type: ignore[arg-type]
                                        cfg.seed, head_space_pool_head(method), feature_map=(h, w),
                                        batch_size=bs) if repoolable(m) else None
        return {"objective": own.to_dict(), "floor": floor.to_dict(),
                "heads_pearson_c": None if heads is None else heads.pearson_c,
                "heads_pearson_c_note": "one local query per image" if heads is None else heads.note,
                "heads_drop": None if drop is None else drop.to_dict()}

    record = dict(session.cached(m, "co_objective", params, compute))
    record["backbone_pearson_c"] = (similarity_result(session, m).pearson_c
                                    if min(session.feature_map(m)) >= 2 else None)
    record["backbone_drop"] = drop_result(session, m, accuracy=False)
    return record


def _verdicts(session: Session, objective: dict[str, ObjectiveResult], floors: dict[str, ObjectiveResult],
              trained: list[Model]) -> list[str]:
    """Per CO group, plainly: do its local queries find their own image's target better than the base
    model's global heads at every position (its base group, paired by seed; else its own global heads)?"""
    groups = {g: [m for m in ms if m in trained] for g, ms in session.groups().items()}
    groups = {g: ms for g, ms in groups.items() if ms}
    against = {c.a: c for c in comparisons(groups) if c.why == "CO against its base method"}
    out = []
    for g, models in groups.items():
        if not all((m.method_name or "").startswith("co_") for m in models):
            continue
        if g in against:
            c = against[g]
            p = paired(f"{g} (local heads)", f"{c.b} (global heads at every position)", "own-image retrieval",
                       [PCT * objective[a.label].retrieval for a, _ in c.pairs],
                       [PCT * objective[b.label].retrieval for _, b in c.pairs], " points", MARGINS["accuracy"])
            note = f" ({c.note})" if c.note else ""
        else:
            p = paired(f"{g} (local heads)", f"{g}'s own global heads at every position", "own-image retrieval",
                       [PCT * objective[m.label].retrieval for m in models],
                       [PCT * floors[m.label].retrieval for m in models], " points", MARGINS["accuracy"])
            note = " (no base-method group in the comparison, so each checkpoint's own global heads are the floor)"
        out.append(f"{g}: {_which_way(p)}{note}. {p.sentence(1)}")
    return out


def _which_way(p: Paired) -> str:
    """Does the CO group's local retrieval clear the floor, in words that claim no more than the seeds
    resolve: better or worse (resolved), no better and no worse (the interval is narrow), or cannot tell."""
    floor = "the base model's global heads applied at every position"
    if p.resolved:
        return (f"its local queries find their own image's target {'better' if p.mean > 0 else 'worse'} than {floor}")
    if p.negligible:
        return f"its local queries find their own image's target no better and no worse than {floor}"
    seeds = "one seed" if p.n < 2 else f"{p.n} seeds (±{p.resolvable:.1f} points)"
    return f"we cannot tell with {seeds} whether its local queries find their own image's target better than {floor}"


@section("co_objective")
def co_objective_section(session: Session) -> Section:
    trained = [m for m in session.models if not m.is_external]
    skipped = [m.label for m in session.models if m.is_external]
    skip_text = (f" External models have no heads, so they are left out: {', '.join(skipped)}." if skipped else "")
    if not trained:
        return Section(text=["This section reads the heads of a cossl checkpoint (its projector, predictor, momentum "
                             "branch and CO term); the comparison has none." + skip_text])
    records = {m.label: _record(session, m) for m in trained}
    objective = {k: ObjectiveResult.from_dict(r["objective"]) for k, r in records.items()}
    floors = {k: ObjectiveResult.from_dict(r["floor"]) for k, r in records.items()}
    groups = {g: [m for m in ms if not m.is_external] for g, ms in session.groups().items()}
    groups = {g: ms for g, ms in groups.items() if ms}

    def col(models: list[Model], value: Any, scale: float = 1.0, digits: int = 3) -> str:
        return pm([value(m) for m in models], scale, digits)

    rows = [[g, str(len(ms)), objective[ms[0].label].path,
             col(ms, lambda m: objective[m.label].own_cosine), col(ms, lambda m: objective[m.label].other_cosine),
             col(ms, lambda m: objective[m.label].retrieval, PCT, 1),
             f"{PCT * objective[ms[0].label].chance:.1f}",
             col(ms, lambda m: floors[m.label].retrieval, PCT, 1),
             col(ms, lambda m: objective[m.label].global_own_cosine),
             col(ms, lambda m: objective[m.label].global_retrieval, PCT, 1)] for g, ms in groups.items()]
    some = next((r["heads_drop"] for r in records.values() if r["heads_drop"] is not None), None)
    last = last_point_name(_drop(some)) if some is not None else "all but one"

    def dropped(m: Model, space: str) -> float | None:  # None: a global that cannot be re-pooled (class token)
        record = records[m.label][f"{space}_drop"]
        return None if record is None else record["cosine_mean"][-1]

    space_rows = [[g, col(ms, lambda m: records[m.label]["backbone_pearson_c"]),
                   col(ms, lambda m: records[m.label]["heads_pearson_c"]),
                   col(ms, lambda m: dropped(m, "backbone")), col(ms, lambda m: dropped(m, "heads"))]
                  for g, ms in groups.items()]
    png = session.path("co_objective", "co_objective.png")
    save_figure(plot_objective_maps({g: [objective[m.label] for m in ms] for g, ms in groups.items()},
                                    {g: [session.seed_name(m) for m in ms] for g, ms in groups.items()}), png, dpi=110)
    write_json(records, session.path("co_objective", "co_objective.json"))
    verdicts = _verdicts(session, objective, floors, trained)

    def metric(name: str, value: Any, digits: int = 3, margin: str = "cosine") -> Metric:
        return Metric(name, {m.label: value(m) for m in trained}, digits=digits, margin=MARGINS[margin])

    return Section(
        text=[f"On the {len(session.data)} evaluation images: {VIEWS}. For every position of view a, the local "
              "query (a CO model's local heads, or the shared global heads it trains at every position; a base "
              "model's global heads applied at every position, which were never trained for it) against the global "
              "targets of view b: the mean cosine to its own image's target and to the other images', and "
              "retrieval, the fraction of local queries whose most similar target is their own image's (chance "
              "1 / N). 'global heads at every position' reads every model that way: the floor a CO model's local "
              "heads must clear. The global query against the same targets (the base objective) is beside. "
              "Pearson C and patch dropping are given in the backbone's space (the similarity and patch-drop "
              "sections) and in the heads' space (the queries the objective compares; patch dropping re-pooled "
              "through pool MLP, projector and predictor). Mean ± std over seeds." + skip_text, *verdicts],
        figures=[FigureRef(session.rel(png), "own-image cosine and retrieval per position, the mean of each group's "
                           "seeds (named above each column); retrieval coloured from chance up")],
        tables=[Table("the objective on held-out images",
                      ["group", "seeds", "local queries", "own cosine", "other images' cosine", "retrieval (%)",
                       "chance (%)", "global heads at every position: retrieval (%)", "global query: own cosine",
                       "global query: retrieval (%)"], rows),
                Table("backbone space against heads' space",
                      ["group", "Pearson C (backbone)", "Pearson C (heads)", f"cosine, {last} dropped (backbone)",
                       f"cosine, {last} dropped (heads)"], space_rows)],
        files=["co_objective/co_objective.json"], summary=records,
        metrics=[metric("CO objective: own-image retrieval (%)", lambda m: PCT * objective[m.label].retrieval, 1,
                        "accuracy"),
                 metric("CO objective: own - other images' cosine",
                        lambda m: objective[m.label].own_cosine - objective[m.label].other_cosine),
                 metric("Pearson C, heads' space", lambda m: records[m.label]["heads_pearson_c"]),
                 metric(f"cosine, {last} dropped, heads' space", lambda m: dropped(m, "heads"))],
    )


def _drop(record: dict[str, Any]) -> Any:
    from cossl_analysis.analyses.patch_drop import PatchDropResult

    return PatchDropResult.from_dict(record)
