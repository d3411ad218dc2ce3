"""The analyses of a :class:`~cossl_analysis.session.Session`, each as one report :class:`Section`.

Every builder computes (or reads back from the store) one result per checkpoint, writes the raw
numbers under its folder of the output, draws one panel or curve per *group* (checkpoints that
share a label are seeds of one group) and tabulates mean ± std over the seeds:

* :func:`erf_section` (Figure 4): ERFs at the four positions; the first seed of each group is drawn.
* :func:`similarity_section` (Figure 3B): global against local similarity, one panel per group
  (its first seed's pairs), Pearson C as mean ± std over the seeds.
* :func:`patch_drop_section`: cosine and probe accuracy as local representations are dropped.
* :func:`internal_section`: probe accuracy under internal noise and internal masking.
* :func:`corruption_section`, :func:`adversarial_section`, :func:`large_crop_section`: robustness.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cossl_analysis._utils import write_json
from cossl_analysis.loading import Model
from cossl_analysis.plots import Panel, Series, plot_panels
from cossl_analysis.robustness import SweepResult, resolve_layer, run_cells
from cossl_analysis.session import FigureRef, Section, Session, Table, pm
from cossl_train.atomic import atomic_write_text

__all__ = ["BUILDERS", "PROBE_SECTIONS"]

PCT = 100.0


# --------------------------------------------------------------------------------------------
# helpers shared by the builders
# --------------------------------------------------------------------------------------------


def _per_group(session: Session, value: Callable[[Model], Any]) -> dict[str, list[Any]]:
    """Group -> the value of each of its seeds."""
    return {group: [value(m) for m in models] for group, models in session.groups().items()}


def _curves(results: dict[str, dict[str, Any]], session: Session, keys: Sequence[str]) -> tuple[dict, dict]:
    """(group -> mean of its seeds' lists under ``keys``, group -> std), from per-label results."""
    means: dict[str, dict[str, Any]] = {}
    stds: dict[str, dict[str, Any]] = {}
    for group, models in session.groups().items():
        first = results[models[0].label]
        means[group], stds[group] = dict(first), dict(first)
        for key in keys:
            if first.get(key) is None:
                continue
            stack = np.array([results[m.label][key] for m in models], dtype=float)
            means[group][key] = stack.mean(axis=0).tolist()
            stds[group][key] = (stack.std(axis=0, ddof=1) if len(models) > 1 else np.zeros(stack.shape[1])).tolist()
    return means, stds


def _pm_rows(values: dict[str, list[Sequence[float]]], scale: float = 1.0, digits: int = 3) -> list[list[str]]:
    """One row per group: the group, then mean ± std over its seeds of each column."""
    return [[g, *[pm([seed[t] for seed in seeds], scale, digits) for t in range(len(seeds[0]))]]
            for g, seeds in values.items()]


def _spread_name(session: Session, single: str) -> str:
    return "std over seeds" if any(len(v) > 1 for v in session.groups().values()) else single


# --------------------------------------------------------------------------------------------
# Figure 4: effective receptive fields
# --------------------------------------------------------------------------------------------


def _erf_record(session: Session, model: Model) -> dict[str, Any]:
    from cossl_analysis.erf import erf_map

    opts = session.options
    params = {"positions": [list(p) for p in opts.positions], "images": opts.erf_images}

    def compute() -> dict[str, Any]:
        images = session.data.pixels[: opts.erf_images]
        maps = erf_map(model.encoder, images, opts.positions, average=False, chunk_size=opts.chunk_size,
                       progress=session.progress)
        return {"maps": maps, "feature_map": list(session.feature_map(model))}

    return session.cached(model, "erf", params, compute)


def _plot_erf_means(means: dict[str, np.ndarray], positions: Sequence[tuple[float, float]], path: Any) -> None:
    """One row per group, one column per position: the image-averaged ERFs, each scaled to its max."""
    fig = Figure(figsize=(2.2 * len(positions) + 0.6, 2.2 * len(means)))
    axes = fig.subplots(len(means), len(positions), squeeze=False)
    for r, (label, maps) in enumerate(means.items()):
        for c, pos in enumerate(positions):
            peak = float(maps[c].max())
            axes[r, c].imshow(maps[c] / peak if peak > 0 else maps[c], cmap="inferno", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(f"({pos[0]:g}, {pos[1]:g})", fontsize=9)
            if c == 0:
                axes[r, c].set_ylabel(label, fontsize=9)
    fig.suptitle("effective receptive fields, averaged over images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def erf_section(session: Session) -> Section:
    from cossl_analysis.erf import position_indices
    from cossl_analysis.figures import erf_stats, plot_erf_comparison, rf_centres

    opts = session.options
    records = {m.label: _erf_record(session, m) for m in session.models}
    per_model = {}
    for m in session.models:
        maps, (h, w) = np.asarray(records[m.label]["maps"]), records[m.label]["feature_map"]
        np.save(session.path("erf", f"{m.slug}_maps.npy"), maps)
        mean = maps.mean(axis=0)
        per_model[m.label] = {"num_images": len(maps), "feature_map": [h, w], "positions": [
            {"position": list(p), "index": list(ij), **erf_stats(mean[t])}
            for t, (p, ij) in enumerate(zip(opts.positions, position_indices(opts.positions, h, w), strict=True))]}
    first = {g: models[0] for g, models in session.groups().items()}
    show = min(opts.show, opts.erf_images, len(session.data))
    images = session.data.pixels[:show]
    fig4, fig_mean = session.path("erf", "figure4.png"), session.path("erf", "erf_mean.png")
    plot_erf_comparison(images, {g: np.asarray(records[m.label]["maps"])[:show] for g, m in first.items()},
                        opts.positions, fig4,
                        centres={g: rf_centres(m.config, opts.positions, images.shape[-1]) for g, m in first.items()})
    _plot_erf_means({g: np.asarray(records[m.label]["maps"]).mean(axis=0) for g, m in first.items()}, opts.positions,
                    fig_mean)
    radius = _per_group(session, lambda m: [p["rms_radius"] for p in per_model[m.label]["positions"]])
    header = ["group", *[f"({p[0]:g}, {p[1]:g})" for p in opts.positions]]
    rows = _pm_rows(radius, digits=2)
    write_json(per_model, session.path("erf", "erf.json"))
    n_img = per_model[session.models[0].label]["num_images"]
    return Section(
        "erf", "Effective receptive fields (Figure 4)",
        text=[f"Gradient magnitude of the channel sum of the local representation at each normalised position, "
              f"with respect to the input pixels (summed over colour channels), on the first {n_img} evaluation "
              f"images. The figure shows the first seed of each group on {show} image(s) (crosses: centres of the "
              "theoretical receptive fields) and the maps averaged over the images; the table gives the RMS radius "
              "(pixels) of the averaged map, mean ± std over seeds."],
        figures=[FigureRef(session.rel(fig4), "ERFs per image, first seed of each group"),
                 FigureRef(session.rel(fig_mean), "ERFs averaged over the images, first seed of each group")],
        tables=[Table("ERF RMS radius (px) per position", header, rows)],
        files=["erf/erf.json", *[f"erf/{m.slug}_maps.npy" for m in session.models]],
        summary=per_model,
        headline={g: {"ERF RMS radius (px)": pm([float(np.mean(seed)) for seed in r], digits=2)}
                  for g, r in radius.items()},
    )


# --------------------------------------------------------------------------------------------
# Figure 3B: global against local similarity
# --------------------------------------------------------------------------------------------


def similarity_section(session: Session) -> Section:
    from cossl_analysis.similarity import (
        SimilarityResult,
        plot_similarity_panels,
        similarity_from_features,
        write_pairs,
    )

    opts = session.options
    if len(session.data) < 2:
        raise ValueError("the similarity analysis needs at least 2 images")
    params = {"mode": opts.sim_mode, "max_pairs": opts.max_pairs, "seed": opts.seed}

    def result(m: Model) -> SimilarityResult:
        record = session.cached(m, "similarity", params, lambda: similarity_from_features(
            *session.features(m), mode=opts.sim_mode, seed=opts.seed, max_pairs=opts.max_pairs).to_dict())
        return SimilarityResult.from_dict(record)

    results = {m.label: result(m) for m in session.models}
    c = _per_group(session, lambda m: results[m.label].pearson_c)
    intra = _per_group(session, lambda m: results[m.label].intra_local_mean)
    first = {g: results[models[0].label] for g, models in session.groups().items()}
    png = session.path("similarity", "similarity.png")
    plot_similarity_panels(first, png, seed=opts.seed, titles={g: f"{g}: C = {pm(c[g], digits=2)}" for g in first})
    write_pairs(results, session.path("similarity", "similarity.csv"))
    summaries = {label: r.summary() for label, r in results.items()}
    write_json(summaries, session.path("similarity", "similarity.json"))
    rows = [[g, str(len(c[g])), pm(c[g]), pm(intra[g]), str(first[g].summary()["num_pairs"])] for g in c]
    return Section(
        "similarity", "Global against local similarity (Figure 3B)",
        text=[f"For every pair of evaluation images: cosine similarity of their global representations against "
              f"that of their local representations ({opts.sim_mode} mode: "
              + {"random": "one random position in each image", "same": "mean over same positions",
                 "all": "mean over all position pairs"}[opts.sim_mode]
              + "). C is the Pearson correlation of the two over the pairs; the dashed line is the mean cosine "
              "between distinct positions of one image. One panel per group, drawn from its first seed; C and the "
              "intra-image similarity are mean ± std over the seeds."],
        figures=[FigureRef(session.rel(png), "global against local similarity, first seed of each group")],
        tables=[Table("Pearson C and intra-image local similarity",
                      ["group", "seeds", "Pearson C", "intra-image local similarity", "pairs"], rows)],
        files=["similarity/similarity.json", "similarity/similarity.csv"],
        summary=summaries,
        headline={g: {"Pearson C": pm(c[g])} for g in c},
    )


# --------------------------------------------------------------------------------------------
# patch dropping
# --------------------------------------------------------------------------------------------


def patch_drop_section(session: Session) -> Section:
    from cossl_analysis.patch_drop import drop_panels, dropped_axis, patch_drop_from_features
    from cossl_train.encoder import pool_head

    opts = session.options
    params = {"fractions": list(opts.fractions), "mode": opts.drop, "order": opts.order, "seed": opts.seed,
              "accuracy": opts.drop_accuracy}

    def compute(m: Model) -> dict[str, Any]:
        return patch_drop_from_features(
            session.features(m)[1], opts.fractions, opts.drop, opts.order, opts.seed,  # type: ignore[arg-type]
            pool_head(m.encoder), m.probe if opts.drop_accuracy else None,
            session.data.labels if opts.drop_accuracy else None, session.feature_map(m), opts.batch_size)

    results = {m.label: session.cached(m, "patch_drop", params, lambda m=m: compute(m)) for m in session.models}
    means, stds = _curves(results, session, ("cosine_mean", "accuracy"))
    spread = _spread_name(session, "std over images")
    png = session.path("patch_drop", "patch_drop.png")
    plot_panels(drop_panels(means, stds if spread == "std over seeds" else None, spread), png)
    write_json({"per_checkpoint": results, "per_group_mean": means, "per_group_std": stds},
               session.path("patch_drop", "patch_drop.json"))
    _, names = dropped_axis(next(iter(results.values())))
    cos = _per_group(session, lambda m: results[m.label]["cosine_mean"])
    tables = [Table("cosine to the intact global representation", ["group", *names], _pm_rows(cos))]
    headline = {g: {"cosine, all but one dropped": pm([seed[-1] for seed in v])} for g, v in cos.items()}
    if opts.drop_accuracy:
        acc = _per_group(session, lambda m: results[m.label]["accuracy"])
        tables.append(Table("linear-probe top-1 (%)", tables[0].header, _pm_rows(acc, PCT, 1)))
    return Section(
        "patch_drop", "Patch dropping",
        text=[f"A fraction of the local representations is dropped after the encoder ({opts.drop} order) and the "
              "global representation is pooled again from the kept positions. The x axis is the fraction actually "
              "dropped, k / P (at least one position is always kept: the last point is 'all but one'). Band: "
              f"{spread}; tables: mean ± std over seeds."],
        figures=[FigureRef(session.rel(png), "cosine and probe accuracy against the fraction dropped")],
        tables=tables, files=["patch_drop/patch_drop.json"], summary={"per_checkpoint": results}, headline=headline,
    )


# --------------------------------------------------------------------------------------------
# accuracy cells: internal corruption, image corruptions, adversarial attacks, large crops
# --------------------------------------------------------------------------------------------


def _cells(session: Session, sweeps: Sequence[str]) -> SweepResult:
    """The accuracy cells of ``sweeps`` (from the store, or computed), and ``robustness/robustness.csv``
    rewritten with every cell this run has seen so far."""
    result = run_cells(session.models, session.data, session.options, session.store, sweeps, session.progress)
    for r in result.records:
        session.cell_records[(r["label"], r["sweep"], r["setting"], r["severity"], r["eps_255"], r["strength"])] = r
    _write_cells(session)
    return result


def _accuracy_of(result: SweepResult) -> Callable[..., float]:
    table = {(r["label"], r["sweep"], r["setting"], r["severity"], r["eps_255"], r["strength"]): r["accuracy"]
             for r in result.records}

    def get(label: str, sweep: str, setting: str, severity: int | None = None, eps: float | None = None,
            strength: float | None = None) -> float:
        return table[(label, sweep, setting, severity, eps, strength)]

    return get


def clean_accuracy(session: Session) -> dict[str, float]:
    """Label -> clean top-1 (a cell of the store)."""
    get = _accuracy_of(_cells(session, ()))
    return {m.label: get(m.label, "clean", "clean") for m in session.models}


def _chance(session: Session) -> float:
    return PCT / session.data.num_classes


def internal_section(session: Session) -> Section:
    from cossl_analysis.internal_corruption import STRENGTH_NAMES

    opts = session.options
    get = _accuracy_of(_cells(session, ("internal",)))
    layers = {resolve_layer(m.encoder, opts.layer) or "the final feature map" for m in session.models}
    panels, tables, headline, raw = [], [], {g: {} for g in session.groups()}, {}
    for kind in opts.internal_kinds:
        s = list(opts.strengths(kind))
        acc = _per_group(session, lambda m, kind=kind, s=s: [get(m.label, "internal", kind, strength=v) for v in s])
        raw[kind] = {"strengths": s, "per_checkpoint": {m.label: [get(m.label, "internal", kind, strength=v)
                                                                  for v in s] for m in session.models}}
        panel = Panel(f"internal {kind} at {', '.join(sorted(layers))}", STRENGTH_NAMES[kind], "top-1 accuracy (%)",
                      hline=_chance(session))
        for g, seeds in acc.items():
            mean, std = np.mean(seeds, axis=0), (np.std(seeds, axis=0, ddof=1) if len(seeds) > 1 else None)
            panel.series.append(Series(g, s, PCT * mean, None if std is None else PCT * std))
        panels.append(panel)
        with_avg = {g: [[*seed, np.mean([a for a, v in zip(seed, s, strict=True) if v > 0] or [np.nan])]
                        for seed in seeds] for g, seeds in acc.items()}
        rows = _pm_rows(with_avg, PCT, 1)
        tables.append(Table(f"internal {kind}: top-1 (%) per strength",
                            ["group", *[f"{v:g}" for v in s], "average (s > 0)"], rows))
        for row in rows:
            headline[row[0]][f"internal {kind} avg (%)"] = row[-1]
    png = session.path("internal_corruption", "internal.png")
    plot_panels(panels, png)
    write_json({"layer": sorted(layers), **raw}, session.path("internal_corruption", "internal.json"))
    return Section(
        "internal", "Internal corruption and internal masking",
        text=[f"The output of {', '.join(sorted(layers))} is corrupted at test time and the rest of the network, "
              "the pooling and the linear probe run as usual. noise: adds s x (per-sample feature std) x N(0, 1); "
              "zero: each unit zeroed with probability s; mask: each position (all its channels) zeroed with "
              f"probability s (internal masking). Same random draws (seed {opts.seed}) for every strength and "
              "checkpoint. 'average (s > 0)' is the mean accuracy over the swept strengths above 0: for mask, the "
              "internal-masking accuracy. Mean ± std over seeds."],
        figures=[FigureRef(session.rel(png), "accuracy against internal corruption strength")],
        tables=tables, files=["internal_corruption/internal.json", "robustness/robustness.csv"], summary=raw,
        headline=headline,
    )


def _write_cells(session: Session) -> None:
    """``robustness/robustness.csv``: every accuracy cell of this run, long format."""
    columns = ("checkpoint", "label", "group", "method", "c_min", "sweep", "setting", "severity", "eps_255",
               "strength", "accuracy", "n_images")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for rec in session.cell_records.values():
        writer.writerow({k: ("" if rec.get(k) is None else rec[k]) for k in columns})
    atomic_write_text(session.path("robustness", "robustness.csv"), buffer.getvalue())


def corruption_summary(session: Session, result: SweepResult) -> dict[str, dict[str, Any]]:
    """Per label: clean, per (corruption, severity), mean over the swept 15 ImageNet-C corruptions
    (``mean_corruption_accuracy``), mean over the swept extra 4 (``extra_corruption_accuracy``) and
    ``relative_drop`` = (clean - mean over the 15) / clean."""
    from cossl_analysis.corruptions import COMMON_CORRUPTIONS

    opts, get = session.options, _accuracy_of(result)
    out = {}
    for m in session.models:
        acc = {name: {s: get(m.label, "corruption", name, severity=s) for s in opts.severities}
               for name in opts.corruptions}
        common = [a for name, per in acc.items() if name in COMMON_CORRUPTIONS for a in per.values()]
        extra = [a for name, per in acc.items() if name not in COMMON_CORRUPTIONS for a in per.values()]
        clean = get(m.label, "clean", "clean")
        mca = float(np.mean(common)) if common else None
        out[m.label] = {"clean": clean, "corruption": acc,
                        "by_name": {n: float(np.mean(list(p.values()))) for n, p in acc.items()},
                        "by_severity": {s: float(np.mean([p[s] for p in acc.values()])) for s in opts.severities},
                        "mean_corruption_accuracy": mca,
                        "extra_corruption_accuracy": float(np.mean(extra)) if extra else None,
                        "relative_drop": (clean - mca) / clean if mca is not None and clean > 0 else None}
    return out


def corruption_section(session: Session) -> Section:
    from cossl_analysis.corruptions import COMMON_CORRUPTIONS

    opts = session.options
    result = _cells(session, ("corruption",))
    summary = corruption_summary(session, result)
    write_json(summary, session.path("robustness", "corruption.json"))
    groups = session.groups()
    val = _per_group(session, lambda m: summary[m.label])
    swept_common = [n for n in opts.corruptions if n in COMMON_CORRUPTIONS]
    extra = [n for n in opts.corruptions if n not in COMMON_CORRUPTIONS]
    sev = Panel(f"mean over {len(opts.corruptions)} corruptions", "severity (0 = clean)", "top-1 accuracy (%)",
                hline=_chance(session), xticks=[0, *opts.severities])
    for g, seeds in val.items():
        curves = np.array([[s["clean"], *[s["by_severity"][v] for v in opts.severities]] for s in seeds])
        sev.series.append(Series(g, [0, *opts.severities], PCT * curves.mean(axis=0),
                                 PCT * curves.std(axis=0, ddof=1) if len(seeds) > 1 else None))
    png = session.path("robustness", "corruption.png")
    plot_panels([sev], png)
    bars = session.path("robustness", "corruption_by_name.png")
    _plot_bars(opts.corruptions, {g: [PCT * np.mean([s["by_name"][n] for s in seeds]) for n in opts.corruptions]
                                  for g, seeds in val.items()}, bars, _chance(session))
    main = Table("clean and corrupted top-1 (%)", ["group", "seeds", "clean", f"mean of the {len(swept_common)} "
                 "ImageNet-C corruptions", f"mean of the {len(extra)} extra", "relative drop (%)"],
                 [[g, str(len(seeds)), pm([s["clean"] for s in seeds], PCT, 1),
                   pm([s["mean_corruption_accuracy"] for s in seeds], PCT, 1),
                   pm([s["extra_corruption_accuracy"] for s in seeds], PCT, 1),
                   pm([s["relative_drop"] for s in seeds], PCT, 1)] for g, seeds in val.items()])
    per_name = Table("per corruption, mean over severities, top-1 (%)", ["corruption", *groups],
                     [[n + ("" if n in COMMON_CORRUPTIONS else " (extra)"),
                       *[pm([s["by_name"][n] for s in val[g]], PCT, 1) for g in groups]] for n in opts.corruptions])
    return Section(
        "corruption", "Image corruptions (ImageNet-C)",
        text=[f"{len(opts.corruptions)} corruptions of imagecorruptions at severities "
              f"{', '.join(map(str, opts.severities))} (seed {opts.seed}; the same corrupted images for every "
              f"checkpoint). The mean corruption accuracy is over the {len(swept_common)} swept ImageNet-C "
              "corruptions (of the benchmark's 15) and the severities; the extra corruptions (speckle noise, "
              "Gaussian blur, spatter, saturate) are reported beside it, not averaged in. Relative drop: (clean - "
              "mean) / clean. Mean ± std over seeds."
              + (f" The images are smaller than {opts.min_size} px: each is enlarged by an integer factor, corrupted "
                 "and averaged back, so pixel noise is weaker than at native size."
                 if session.data.images.shape[-1] < opts.min_size else "")],
        figures=[FigureRef(session.rel(png), "accuracy against severity"),
                 FigureRef(session.rel(bars), "accuracy per corruption")],
        tables=[main, per_name], files=["robustness/corruption.json", "robustness/robustness.csv"],
        summary=summary,
        headline={g: {"clean top-1 (%)": main.rows[k][2], "ImageNet-C mean (%)": main.rows[k][3],
                      "extra-4 mean (%)": main.rows[k][4]} for k, g in enumerate(val)},
    )


def _plot_bars(names: Sequence[str], values: dict[str, list[float]], path: Any, chance: float) -> None:
    """Horizontal bars: one row per corruption, the groups side by side."""
    fig = Figure(figsize=(7, max(3.5, 0.3 * len(names) + 1.5)))
    ax = fig.subplots()
    height = 0.8 / len(values)
    y = np.arange(len(names))
    for k, (g, v) in enumerate(values.items()):
        ax.barh(y + (k - (len(values) - 1) / 2) * height, v, height=height, color=f"C{k % 10}", label=g)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()  # canonical order (noise first) from the top
    ax.axvline(chance, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("top-1 accuracy (%), mean over severities and seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def adversarial_section(session: Session) -> Section:
    opts = session.options
    result = _cells(session, ("adversarial",))
    get = _accuracy_of(result)
    panels, rows, raw, headline = [], [], {}, {g: {} for g in session.groups()}
    for attack in opts.attacks:
        acc = _per_group(session, lambda m, a=attack: [get(m.label, "clean", "clean"),
                                                      *[get(m.label, "adversarial", a, eps=e) for e in opts.eps_255]])
        raw[attack] = {m.label: [get(m.label, "adversarial", attack, eps=e) for e in opts.eps_255]
                       for m in session.models}
        steps = f", {opts.pgd_steps} steps" if attack == "pgd" else ""
        panel = Panel(f"{attack.upper()} (L-inf{steps})", "budget eps (/255; 0 = clean)", "top-1 accuracy (%)",
                      hline=_chance(session))
        for g, seeds in acc.items():
            arr = np.array(seeds)
            panel.series.append(Series(g, [0, *opts.eps_255], PCT * arr.mean(axis=0),
                                       PCT * arr.std(axis=0, ddof=1) if len(seeds) > 1 else None))
            attacked = [float(np.mean([a for a, e in zip(seed[1:], opts.eps_255, strict=True) if e > 0]))
                        for seed in seeds]
            rows.append([attack.upper(), g, *[pm([s[t + 1] for s in seeds], PCT, 1) for t in range(len(opts.eps_255))],
                         pm(attacked, PCT, 1)])
            headline[g][f"{attack.upper()} avg (%)"] = rows[-1][-1]
        panels.append(panel)
    png = session.path("robustness", "adversarial.png")
    plot_panels(panels, png)
    write_json({"eps_255": list(opts.eps_255), **raw}, session.path("robustness", "adversarial.json"))
    table = Table("top-1 (%) under attack", ["attack", "group", *[f"eps {e:g}/255" for e in opts.eps_255],
                                             "average over budgets"], rows)
    return Section(
        "adversarial", "Adversarial attacks (FGSM, PGD)",
        text=[f"L-inf attacks of torchattacks on encoder + pooling + probe fed [0, 1] images; budgets in /255 of "
              f"pixel values. PGD: {opts.pgd_steps} steps of 2.5 eps / steps from a random start (seed {opts.seed}). "
              "'average over budgets' is the mean accuracy over the swept budgets above 0. Mean ± std over seeds."],
        figures=[FigureRef(session.rel(png), "accuracy against the budget")], tables=[table],
        files=["robustness/adversarial.json", "robustness/robustness.csv"], summary=raw, headline=headline,
    )


def large_crop_section(session: Session) -> Section:
    clean = clean_accuracy(session)
    by_method: dict[str, list[tuple[float, float, str]]] = {}
    for m in session.models:
        by_method.setdefault(m.method, []).append((m.c_min, clean[m.label], m.label))
    panel = Panel("clean top-1 against pre-training c_min", "pre-training minimum crop scale c_min",
                  "top-1 accuracy (%)", hline=_chance(session))
    for method, rows in by_method.items():
        c_values = sorted({c for c, _, _ in rows})
        panel.series.append(Series(method, c_values, [PCT * np.mean([a for c, a, _ in rows if c == cv])
                                                      for cv in c_values]))
    png = session.path("robustness", "large_crop.png")
    plot_panels([panel], png)
    single = {method: rows[0][0] for method, rows in by_method.items() if len({c for c, _, _ in rows}) == 1}
    note = ("Each method has checkpoints at a single c_min, so there is no trend to read here; pass checkpoints "
            "pre-trained with several augment.c_min values to see one." if len(single) == len(by_method) else
            "Methods with a single c_min: " + ", ".join(f"{m} ({c:g})" for m, c in single.items()) + "."
            if single else "")
    table = Table("clean top-1 (%) per checkpoint", ["method", "c_min", "checkpoint", "clean top-1"],
                  [[method, f"{c:g}", label, f"{PCT * a:.1f}"] for method, rows in by_method.items()
                   for c, a, label in sorted(rows)], note)
    write_json({method: [{"c_min": c, "clean": a, "label": label} for c, a, label in sorted(rows)]
                for method, rows in by_method.items()}, session.path("robustness", "large_crop.json"))
    return Section(
        "large_crop", "Large-crop study",
        text=["Clean accuracy against the minimum crop scale augment.c_min each checkpoint was pre-trained with (read "
              "from its config); checkpoints of one method at the same c_min are averaged."],
        figures=[FigureRef(session.rel(png), "accuracy against pre-training c_min")], tables=[table],
        files=["robustness/large_crop.json", "robustness/robustness.csv"],
    )


#: analysis name -> builder, in report order
BUILDERS: dict[str, Callable[[Session], Section]] = {
    "similarity": similarity_section,
    "erf": erf_section,
    "patch_drop": patch_drop_section,
    "internal": internal_section,
    "corruption": corruption_section,
    "adversarial": adversarial_section,
    "large_crop": large_crop_section,
}
#: the analyses that score a linear probe
PROBE_SECTIONS = ("internal", "corruption", "adversarial", "large_crop")

