"""Report section: image corruptions (ImageNet-C)."""

from __future__ import annotations

import numpy as np

from cossl_analysis.analyses.corruption import COMMON_CORRUPTIONS, corruption_set_text, corruption_summary
from cossl_analysis.registry import section
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.paired import MARGINS
from cossl_analysis.report.session import BINOMIAL_NOTE, PCT, FigureRef, Metric, Section, Session, Table, pm
from cossl_analysis.report.sweeps import accuracy_of, check_dependencies, session_sweeps
from cossl_analysis.viz.panels import Panel, Series, plot_panels
from cossl_analysis.viz.robustness import plot_corruption_bars


@section("corruption", check=lambda session: check_dependencies(["corruption"]))
def corruption_section(session: Session) -> Section:
    cfg = session.config.robustness
    get = accuracy_of(session_sweeps(session, ("corruption",)))
    summary = {m.label: corruption_summary(get(m.label, "clean", "clean"), {
        name: {s: get(m.label, "corruption", name, severity=s) for s in cfg.severities}
        for name in cfg.corruptions}).to_dict() for m in session.models}
    write_json(summary, session.path("robustness", "corruption.json"))
    groups = session.groups()
    n = len(session.data)
    val = session.per_group(lambda m: summary[m.label])
    swept_common = [c for c in cfg.corruptions if c in COMMON_CORRUPTIONS]
    extra = [c for c in cfg.corruptions if c not in COMMON_CORRUPTIONS]
    which = corruption_set_text(cfg.corruptions, cfg.severities)
    averaged = swept_common or extra
    named = ", ".join(averaged) if len(averaged) <= 3 else f"{len(averaged)} corruptions"
    curve_over = (f"mean over the ImageNet-C corruptions swept ({named})" if swept_common
                  else f"mean over the extra corruptions ({named}; no ImageNet-C one swept)")
    sev = Panel(curve_over, "severity (0 = clean)", "top-1 accuracy (%)", hline=session.chance,
                xticks=[0, *cfg.severities], band="std over seeds")
    for g, seeds in val.items():
        curves = np.array([[s["clean"], *[s["by_severity"][v] for v in cfg.severities]] for s in seeds])
        sev.series.append(Series(session.series_name(g), [0, *cfg.severities], PCT * curves.mean(axis=0),
                                 PCT * curves.std(axis=0, ddof=1) if len(seeds) > 1 else None))
    png = session.path("robustness", "corruption.png")
    save_figure(plot_panels([sev], width=6.0), png)
    bars = session.path("robustness", "corruption_by_name.png")
    by_name = {session.series_name(g): np.array([[PCT * s["by_name"][c] for c in cfg.corruptions] for s in seeds])
               for g, seeds in val.items()}
    severities = ", ".join(str(v) for v in cfg.severities)
    save_figure(plot_corruption_bars(cfg.corruptions, {g: v.mean(axis=0) for g, v in by_name.items()}, session.chance,
                                     errors={g: v.std(axis=0, ddof=1) for g, v in by_name.items() if len(v) > 1},
                                     title=f"top-1 per corruption, mean over severities {severities}"), bars)
    mean_name = f"ImageNet-C mean (%): {which}"
    main = Table("clean and corrupted top-1 (%)", ["group", "seeds", "clean", f"mean of {which}",
                 f"mean of the {len(extra)} extra", "relative drop (%)", "probe"],
                 [[g, str(len(seeds)), pm([s["clean"] for s in seeds], PCT, 1, n),
                   pm([s["mean_corruption_accuracy"] for s in seeds], PCT, 1),
                   pm([s["extra_corruption_accuracy"] for s in seeds], PCT, 1),
                   pm([s["relative_drop"] for s in seeds], PCT, 1), session.probe_text(groups[g])]
                  for g, seeds in val.items()], BINOMIAL_NOTE)
    per_name = Table("per corruption, mean over severities, top-1 (%)", ["corruption", *groups],
                     [[c + ("" if c in COMMON_CORRUPTIONS else " (extra)"),
                       *[pm([s["by_name"][c] for s in val[g]], PCT, 1) for g in groups]] for c in cfg.corruptions])
    small = session.data.images.shape[-1] < cfg.min_size

    def per_model(key: str) -> dict[str, float | None]:
        return {m.label: None if summary[m.label][key] is None else PCT * summary[m.label][key]
                for m in session.models}

    return Section(
        text=[f"{len(cfg.corruptions)} corruptions of imagecorruptions at severities "
              f"{', '.join(map(str, cfg.severities))} (seed {session.config.seed}; the same corrupted images for "
              f"every checkpoint). The mean corruption accuracy is over {which} (the benchmark's mean is over all "
              "15 at severities 1-5); the severity curve averages the same corruptions; the extra corruptions "
              "(speckle noise, Gaussian blur, spatter, saturate) are reported beside it, not averaged in. Relative "
              "drop: (clean - mean) / clean. Mean ± std over seeds."
              + (f" The images are smaller than {cfg.min_size} px: each is enlarged by an integer factor, corrupted "
                 "and averaged back, so pixel noise is weaker than at native size." if small else "")],
        figures=[FigureRef(session.rel(png), f"accuracy against severity ({curve_over})"),
                 FigureRef(session.rel(bars), "accuracy per corruption")],
        tables=[main, per_name], files=["robustness/corruption.json", "robustness/robustness.csv"],
        summary=summary,
        metrics=[Metric("probe top-1 (%)", per_model("clean"), digits=1, n_images=n, margin=MARGINS["accuracy"]),
                 *([Metric(mean_name, per_model("mean_corruption_accuracy"), digits=1, margin=MARGINS["accuracy"])]
                   if swept_common else []),
                 *([Metric(f"mean of the {len(extra)} extra corruptions (%)", per_model("extra_corruption_accuracy"),
                           digits=1, margin=MARGINS["accuracy"])] if extra else [])],
    )
