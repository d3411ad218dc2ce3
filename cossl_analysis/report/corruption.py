"""Report section: image corruptions (ImageNet-C)."""

from __future__ import annotations

import numpy as np

from cossl_analysis.analyses.corruption import COMMON_CORRUPTIONS, corruption_summary
from cossl_analysis.config import RobustnessConfig
from cossl_analysis.registry import analysis
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.session import PCT, FigureRef, Section, Session, Table, pm
from cossl_analysis.report.sweeps import accuracy_of, check_dependencies, session_sweeps
from cossl_analysis.viz.panels import Panel, Series, plot_panels
from cossl_analysis.viz.robustness import plot_corruption_bars


@analysis("corruption", title="Image corruptions (ImageNet-C)", config=RobustnessConfig, needs_probe=True,
          check=lambda session: check_dependencies(["corruption"]), groups=("robustness",), sweep=True,
          help="clean and corrupted accuracy under the 19 corruptions of imagecorruptions (ImageNet-C)",
          writes="`robustness/corruption.png`, `robustness/corruption_by_name.png`, `robustness/corruption.json`, "
                 "`robustness/robustness.csv`")
def corruption_section(session: Session) -> Section:
    cfg = session.config.robustness
    get = accuracy_of(session_sweeps(session, ("corruption",)))
    summary = {m.label: corruption_summary(get(m.label, "clean", "clean"), {
        name: {s: get(m.label, "corruption", name, severity=s) for s in cfg.severities}
        for name in cfg.corruptions}).to_dict() for m in session.models}
    write_json(summary, session.path("robustness", "corruption.json"))
    groups = session.groups()
    val = session.per_group(lambda m: summary[m.label])
    swept_common = [n for n in cfg.corruptions if n in COMMON_CORRUPTIONS]
    extra = [n for n in cfg.corruptions if n not in COMMON_CORRUPTIONS]
    sev = Panel(f"mean over {len(cfg.corruptions)} corruptions", "severity (0 = clean)", "top-1 accuracy (%)",
                hline=session.chance, xticks=[0, *cfg.severities])
    for g, seeds in val.items():
        curves = np.array([[s["clean"], *[s["by_severity"][v] for v in cfg.severities]] for s in seeds])
        sev.series.append(Series(g, [0, *cfg.severities], PCT * curves.mean(axis=0),
                                 PCT * curves.std(axis=0, ddof=1) if len(seeds) > 1 else None))
    png = session.path("robustness", "corruption.png")
    save_figure(plot_panels([sev]), png)
    bars = session.path("robustness", "corruption_by_name.png")
    save_figure(plot_corruption_bars(cfg.corruptions, {g: [PCT * np.mean([s["by_name"][n] for s in seeds])
                                                           for n in cfg.corruptions] for g, seeds in val.items()},
                                     session.chance), bars)
    main = Table("clean and corrupted top-1 (%)", ["group", "seeds", "clean", f"mean of the {len(swept_common)} "
                 "ImageNet-C corruptions", f"mean of the {len(extra)} extra", "relative drop (%)"],
                 [[g, str(len(seeds)), pm([s["clean"] for s in seeds], PCT, 1),
                   pm([s["mean_corruption_accuracy"] for s in seeds], PCT, 1),
                   pm([s["extra_corruption_accuracy"] for s in seeds], PCT, 1),
                   pm([s["relative_drop"] for s in seeds], PCT, 1)] for g, seeds in val.items()])
    per_name = Table("per corruption, mean over severities, top-1 (%)", ["corruption", *groups],
                     [[n + ("" if n in COMMON_CORRUPTIONS else " (extra)"),
                       *[pm([s["by_name"][n] for s in val[g]], PCT, 1) for g in groups]] for n in cfg.corruptions])
    small = session.data.images.shape[-1] < cfg.min_size
    return Section(
        text=[f"{len(cfg.corruptions)} corruptions of imagecorruptions at severities "
              f"{', '.join(map(str, cfg.severities))} (seed {session.config.seed}; the same corrupted images for "
              f"every checkpoint). The mean corruption accuracy is over the {len(swept_common)} swept ImageNet-C "
              "corruptions (of the benchmark's 15) and the severities; the extra corruptions (speckle noise, "
              "Gaussian blur, spatter, saturate) are reported beside it, not averaged in. Relative drop: (clean - "
              "mean) / clean. Mean ± std over seeds."
              + (f" The images are smaller than {cfg.min_size} px: each is enlarged by an integer factor, corrupted "
                 "and averaged back, so pixel noise is weaker than at native size." if small else "")],
        figures=[FigureRef(session.rel(png), "accuracy against severity"),
                 FigureRef(session.rel(bars), "accuracy per corruption")],
        tables=[main, per_name], files=["robustness/corruption.json", "robustness/robustness.csv"],
        summary=summary,
        headline={g: {"clean top-1 (%)": main.rows[k][2], "ImageNet-C mean (%)": main.rows[k][3],
                      "extra-4 mean (%)": main.rows[k][4]} for k, g in enumerate(val)},
    )
