"""Report section: the large-crop study (clean accuracy against the pre-training c_min)."""

from __future__ import annotations

import numpy as np

from cossl_analysis.registry import analysis
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.session import PCT, FigureRef, Section, Session, Table
from cossl_analysis.report.sweeps import clean_accuracy
from cossl_analysis.viz.panels import Panel, Series, plot_panels


@analysis("large_crop", title="Large-crop study", needs_probe=True, groups=("robustness",),
          help="clean accuracy against the minimum crop scale each checkpoint was pre-trained with",
          writes="`robustness/large_crop.png`, `robustness/large_crop.json`, `robustness/robustness.csv`")
def large_crop_section(session: Session) -> Section:
    clean = clean_accuracy(session)
    by_method: dict[str, list[tuple[float, float, str]]] = {}
    for m in session.models:
        by_method.setdefault(m.method, []).append((m.c_min, clean[m.label], m.label))
    panel = Panel("clean top-1 against pre-training c_min", "pre-training minimum crop scale c_min",
                  "top-1 accuracy (%)", hline=session.chance)
    for method, rows in by_method.items():
        c_values = sorted({c for c, _, _ in rows})
        panel.series.append(Series(method, c_values, [PCT * np.mean([a for c, a, _ in rows if c == cv])
                                                      for cv in c_values]))
    png = session.path("robustness", "large_crop.png")
    save_figure(plot_panels([panel]), png)
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
        text=["Clean accuracy against the minimum crop scale augment.c_min each checkpoint was pre-trained with (read "
              "from its config); checkpoints of one method at the same c_min are averaged."],
        figures=[FigureRef(session.rel(png), "accuracy against pre-training c_min")], tables=[table],
        files=["robustness/large_crop.json", "robustness/robustness.csv"],
    )
