"""Report section: adversarial attacks (FGSM, PGD)."""

from __future__ import annotations

import numpy as np

from cossl_analysis.config import RobustnessConfig
from cossl_analysis.registry import analysis
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.session import PCT, FigureRef, Section, Session, Table, pm
from cossl_analysis.report.sweeps import accuracy_of, check_dependencies, session_sweeps
from cossl_analysis.viz.panels import Panel, Series, plot_panels


@analysis("adversarial", title="Adversarial attacks (FGSM, PGD)", config=RobustnessConfig, needs_probe=True,
          check=lambda session: check_dependencies(["adversarial"]), groups=("robustness",), sweep=True,
          help="accuracy under FGSM and PGD (L-inf) at small budgets",
          writes="`robustness/adversarial.png`, `robustness/adversarial.json`, `robustness/robustness.csv`")
def adversarial_section(session: Session) -> Section:
    cfg = session.config.robustness
    get = accuracy_of(session_sweeps(session, ("adversarial",)))
    panels, rows, raw, headline = [], [], {}, {g: {} for g in session.groups()}
    for attack in cfg.attacks:
        acc = session.per_group(lambda m, a=attack: [get(m.label, "clean", "clean"),
                                                    *[get(m.label, "adversarial", a, eps=e) for e in cfg.eps]])
        raw[attack] = {m.label: [get(m.label, "adversarial", attack, eps=e) for e in cfg.eps] for m in session.models}
        steps = f", {cfg.pgd_steps} steps" if attack == "pgd" else ""
        panel = Panel(f"{attack.upper()} (L-inf{steps})", "budget eps (/255; 0 = clean)", "top-1 accuracy (%)",
                      hline=session.chance)
        for g, seeds in acc.items():
            arr = np.array(seeds)
            panel.series.append(Series(g, [0, *cfg.eps], PCT * arr.mean(axis=0),
                                       PCT * arr.std(axis=0, ddof=1) if len(seeds) > 1 else None))
            attacked = [float(np.mean([a for a, e in zip(seed[1:], cfg.eps, strict=True) if e > 0])) for seed in seeds]
            rows.append([attack.upper(), g, *[pm([s[t + 1] for s in seeds], PCT, 1) for t in range(len(cfg.eps))],
                         pm(attacked, PCT, 1)])
            headline[g][f"{attack.upper()} avg (%)"] = rows[-1][-1]
        panels.append(panel)
    png = session.path("robustness", "adversarial.png")
    save_figure(plot_panels(panels), png)
    write_json({"eps_255": list(cfg.eps), **raw}, session.path("robustness", "adversarial.json"))
    table = Table("top-1 (%) under attack", ["attack", "group", *[f"eps {e:g}/255" for e in cfg.eps],
                                             "average over budgets"], rows)
    return Section(
        text=[f"L-inf attacks of torchattacks on encoder + pooling + probe fed [0, 1] images; budgets in /255 of "
              f"pixel values. PGD: {cfg.pgd_steps} steps of 2.5 eps / steps from a random start (seed "
              f"{session.config.seed}). 'average over budgets' is the mean accuracy over the swept budgets above 0. "
              "Mean ± std over seeds."],
        figures=[FigureRef(session.rel(png), "accuracy against the budget")], tables=[table],
        files=["robustness/adversarial.json", "robustness/robustness.csv"], summary=raw, headline=headline,
    )
