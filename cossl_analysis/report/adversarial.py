"""Report section: adversarial attacks (FGSM, PGD)."""

from __future__ import annotations

import numpy as np

from cossl_analysis.registry import section
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.paired import MARGINS
from cossl_analysis.report.session import BINOMIAL_NOTE, PCT, FigureRef, Metric, Section, Session, Table, pm
from cossl_analysis.report.sweeps import accuracy_of, check_dependencies, session_sweeps
from cossl_analysis.viz.panels import Panel, Series, plot_panels


@section("adversarial", check=lambda session: check_dependencies(["adversarial"]))
def adversarial_section(session: Session) -> Section:
    cfg = session.config.robustness
    get = accuracy_of(session_sweeps(session, ("adversarial",)))
    n = len(session.data)
    groups = session.groups()
    panels, rows, raw, metrics = [], [], {}, []
    attacked = [e for e in cfg.eps if e > 0]
    for attack in cfg.attacks:
        acc = session.per_group(lambda m, a=attack: [get(m.label, "clean", "clean"),
                                                    *[get(m.label, "adversarial", a, eps=e) for e in cfg.eps]])
        raw[attack] = {m.label: [get(m.label, "adversarial", attack, eps=e) for e in cfg.eps] for m in session.models}
        steps = f", {cfg.pgd_steps} steps" if attack == "pgd" else ""
        panel = Panel(f"{attack.upper()} (L-inf{steps})", "budget eps (/255; 0 = clean)", "top-1 accuracy (%)",
                      hline=session.chance, band="std over seeds")

        def average(label: str, attack: str = attack) -> float | None:
            values = [a for a, e in zip(raw[attack][label], cfg.eps, strict=True) if e > 0]
            return float(np.mean(values)) if values else None

        for g, seeds in acc.items():
            arr = np.array(seeds)
            panel.series.append(Series(session.series_name(g), [0, *cfg.eps], PCT * arr.mean(axis=0),
                                       PCT * arr.std(axis=0, ddof=1) if len(seeds) > 1 else None))
            rows.append([attack.upper(), g, *[pm([s[t + 1] for s in seeds], PCT, 1, n) for t in range(len(cfg.eps))],
                         pm([average(m.label) for m in groups[g]], PCT, 1), session.probe_text(groups[g])])
        panels.append(panel)
        if attacked:
            metrics.append(Metric(f"{attack.upper()} avg (%)", {m.label: PCT * average(m.label)  # type: ignore[operator]
                                                                for m in session.models}, digits=1,
                                  margin=MARGINS["accuracy"]))
    png = session.path("robustness", "adversarial.png")
    save_figure(plot_panels(panels), png)
    write_json({"eps_255": list(cfg.eps), **raw}, session.path("robustness", "adversarial.json"))
    table = Table("top-1 (%) under attack", ["attack", "group", *[f"eps {e:g}/255" for e in cfg.eps],
                                             "average over budgets", "probe"], rows, BINOMIAL_NOTE)
    return Section(
        text=[f"L-inf attacks of torchattacks on encoder + pooling + probe fed [0, 1] images; budgets in /255 of "
              f"pixel values. PGD: {cfg.pgd_steps} steps of 2.5 eps / steps from a random start (seed "
              f"{session.config.seed}). 'average over budgets' is the mean accuracy over the swept budgets above 0 "
              f"({', '.join(f'{e:g}' for e in attacked) or 'none'}/255). Mean ± std over seeds."],
        figures=[FigureRef(session.rel(png), "accuracy against the budget")], tables=[table],
        files=["robustness/adversarial.json", "robustness/robustness.csv"], summary=raw, metrics=metrics,
    )
