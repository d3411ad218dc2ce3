"""Report section: internal corruption and internal masking."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cossl_analysis.analyses.internal_corruption import STRENGTH_NAMES
from cossl_analysis.errors import AnalysisError
from cossl_analysis.registry import section
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.loading import Model
from cossl_analysis.report.paired import MARGINS
from cossl_analysis.report.session import BINOMIAL_NOTE, PCT, FigureRef, Metric, Section, Session, Table, pm
from cossl_analysis.report.sweeps import accuracy_of, resolve_layer, session_sweeps
from cossl_analysis.viz.panels import Panel, Series, plot_panels


def _check(session: Session) -> None:
    for m in session.models:
        try:
            layer = resolve_layer(m.encoder, session.config.internal_corruption.layer)
        except AnalysisError as err:
            raise AnalysisError(f"{m.label}: {err}") from None
        if layer == "" and getattr(m.encoder, "pooling_kind", "mean") == "pass":
            raise AnalysisError(f"{m.label}: its global representation ({m.global_description}) is taken in the "
                                "forward pass, so corrupting the final map after it changes nothing; name an inner "
                                "layer with internal_corruption.layer (auto: the last-but-one block)")


@section("internal_corruption", check=_check)
def internal_corruption_section(session: Session) -> Section:
    cfg = session.config.internal_corruption
    get = accuracy_of(session_sweeps(session, ("internal_corruption",)))
    layers = {resolve_layer(m.encoder, cfg.layer) or "the final feature map" for m in session.models}
    n = len(session.data)
    panels, tables, metrics, raw = [], [], [], {}
    for kind in cfg.kinds:
        s = list(cfg.strengths_of(kind))

        def curve(m: Model, kind: str = kind, s: list[float] = s) -> list[float]:
            return [get(m.label, "internal_corruption", kind, strength=v) for v in s]

        def average(m: Model, s: list[float] = s, curve: Callable[[Model], list[float]] = curve) -> float | None:
            above = [a for a, v in zip(curve(m), s, strict=True) if v > 0]
            return float(np.mean(above)) if above else None

        acc = session.per_group(curve)
        raw[kind] = {"strengths": s, "per_checkpoint": {m.label: curve(m) for m in session.models}}
        panel = Panel(f"internal {kind} at {', '.join(sorted(layers))}", STRENGTH_NAMES[kind], "top-1 accuracy (%)",
                      hline=session.chance, band="std over seeds")
        for g, seeds in acc.items():
            mean, std = np.mean(seeds, axis=0), (np.std(seeds, axis=0, ddof=1) if len(seeds) > 1 else None)
            panel.series.append(Series(session.series_name(g), s, PCT * mean, None if std is None else PCT * std))
        panels.append(panel)
        rows = [[g, *[pm([seed[t] for seed in seeds], PCT, 1, n) for t in range(len(s))],
                 pm([average(m) for m in models], PCT, 1), session.probe_text(models)]
                for (g, seeds), models in zip(acc.items(), session.groups().values(), strict=True)]
        tables.append(Table(f"internal {kind}: top-1 (%) per strength",
                            ["group", *[f"{v:g}" for v in s], "average (s > 0)", "probe"], rows, BINOMIAL_NOTE))
        metrics.append(Metric(f"internal {kind} avg (%)",
                              {m.label: None if average(m) is None else PCT * average(m)  # type: ignore[operator]
                               for m in session.models}, digits=1, margin=MARGINS["accuracy"]))
    png = session.path("internal_corruption", "internal.png")
    save_figure(plot_panels(panels), png)
    write_json({"layer": sorted(layers), **raw}, session.path("internal_corruption", "internal.json"))
    return Section(
        text=[f"The output of {', '.join(sorted(layers))} is corrupted at test time and the rest of the network, "
              "the pooling and the linear probe run as usual. noise: adds s x (per-sample feature std) x N(0, 1); "
              "zero: each unit zeroed with probability s; mask: each position (all its channels) zeroed with "
              f"probability s (internal masking). Same random draws (seed {session.config.seed}) for every strength "
              "and checkpoint. 'average (s > 0)' is the mean accuracy over the swept strengths above 0: for mask, the "
              "internal-masking accuracy. Mean ± std over seeds."],
        figures=[FigureRef(session.rel(png), "accuracy against internal corruption strength")],
        tables=tables, files=["internal_corruption/internal.json", "robustness/robustness.csv"], summary=raw,
        metrics=metrics,
    )
