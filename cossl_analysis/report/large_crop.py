"""Report section: the large-crop study (clean accuracy against the pre-training c_min; Figure 5's
view): one curve per group and backbone (RF size), mean ± std over the seeds at each c_min."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cossl_analysis.registry import section
from cossl_analysis.report.files import save_figure, write_json
from cossl_analysis.report.loading import Model
from cossl_analysis.report.paired import MARGINS
from cossl_analysis.report.session import BINOMIAL_NOTE, PCT, FigureRef, Metric, Section, Session, Table, pm
from cossl_analysis.report.sweeps import clean_accuracy
from cossl_analysis.viz.panels import Panel, Series, plot_panels
from cossl_train.paired import mean_std


@dataclass
class CropPoint:
    """The seeds of one curve at one c_min."""

    c_min: float
    labels: list[str]
    accuracy: list[float]

    @property
    def mean_std(self) -> tuple[float, float]:
        return mean_std(self.accuracy)


def rf_text(model: Model) -> str:
    """The backbone and its receptive field, in words (one curve per RF size)."""
    from cossl_train.backbones import backbone_info

    cfg = model.config
    assert cfg is not None
    try:
        rf = backbone_info(cfg.backbone.name, small_image=cfg.backbone.small_image, width=cfg.backbone.width,
                           input_size=cfg.augment.resolution)["rf"]
    except (KeyError, ValueError):  # a backbone the RF calculator does not know
        return cfg.backbone.name
    return f"RF {rf} px ({cfg.backbone.name})"


def crop_curves(models: Sequence[Model], clean: Mapping[str, float]) -> dict[str, list[CropPoint]]:
    """Curve name -> its points by increasing c_min: one curve per label and setup but for c_min and
    the backbone (the groups with c_min left out of their names), and per backbone, named by its RF,
    where the comparison has several; external models (no pre-training crop) are left out."""
    from cossl_analysis.report.setups import REPLICA_KEYS, setup_names

    trained = [m for m in models if not m.is_external]
    several = len({m.backbone for m in trained}) > 1
    names = setup_names(trained, (*REPLICA_KEYS, "augment.c_min", "backbone."))
    curves: dict[str, dict[float, CropPoint]] = {}
    for m, group in zip(trained, names, strict=True):
        assert m.c_min is not None
        name = f"{group}, {rf_text(m)}" if several else group
        point = curves.setdefault(name, {}).setdefault(m.c_min, CropPoint(m.c_min, [], []))
        point.labels.append(m.label)
        point.accuracy.append(clean[m.label])
    return {name: [points[c] for c in sorted(points)] for name, points in curves.items()}


@section("large_crop")
def large_crop_section(session: Session) -> Section:
    clean = clean_accuracy(session)
    curves = crop_curves(session.models, clean)
    n = len(session.data)
    panel = Panel("clean top-1 against pre-training c_min", "pre-training minimum crop scale c_min",
                  "top-1 accuracy (%)", hline=session.chance, band="std over seeds", xlim=(0.0, 1.0))
    for name, points in curves.items():
        stats = [p.mean_std for p in points]
        spread = [PCT * s for _, s in stats] if any(len(p.accuracy) > 1 for p in points) else None
        seeds = sorted({len(p.accuracy) for p in points})
        count = "/".join(map(str, seeds)) + (" seeds" if seeds != [1] else " seed")
        panel.series.append(Series(f"{name} ({count} per point)", [p.c_min for p in points],
                                   [PCT * m for m, _ in stats], spread))
    png = session.path("robustness", "large_crop.png")
    save_figure(plot_panels([panel]), png)
    single = {name: points[0].c_min for name, points in curves.items() if len(points) == 1}
    note = BINOMIAL_NOTE
    if curves and len(single) == len(curves):
        note = ("Each curve has checkpoints at a single c_min, so there is no trend to read here; pass checkpoints "
                "pre-trained with several augment.c_min values to see one. " + note)
    elif single:
        note = "Curves with a single c_min: " + ", ".join(f"{g} ({c:g})" for g, c in single.items()) + ". " + note
    skipped = [m.label for m in session.models if m.is_external]
    backbones = {m.backbone for m in session.models if not m.is_external}
    by_label = {m.label: m for m in session.models}
    table = Table("clean top-1 (%) per curve and c_min", ["curve", "c_min", "seeds", "checkpoints", "clean top-1",
                                                           "probe"],
                  [[name, f"{p.c_min:g}", str(len(p.labels)), ", ".join(p.labels), pm(p.accuracy, PCT, 1, n),
                    session.probe_text([by_label[lab] for lab in p.labels])]
                   for name, points in curves.items() for p in points], note)
    write_json({name: [{"c_min": p.c_min, "labels": p.labels, "clean": p.accuracy, "mean": p.mean_std[0],
                        "std": p.mean_std[1]} for p in points] for name, points in curves.items()},
               session.path("robustness", "large_crop.json"))
    return Section(
        text=["Clean accuracy against the minimum crop scale augment.c_min each checkpoint was pre-trained with (read "
              "from its config): one curve per group" + (" and backbone (RF size)" if len(backbones) > 1 else "")
              + ", mean ± std over the seeds at each c_min."
              + (f" External models have no pre-training crop and are left out: {', '.join(skipped)}." if skipped
                 else "")],
        figures=[FigureRef(session.rel(png), "accuracy against pre-training c_min")], tables=[table],
        files=["robustness/large_crop.json", "robustness/robustness.csv"],
        metrics=[Metric("probe top-1 (%)", {m.label: PCT * clean[m.label] for m in session.models}, digits=1,
                        n_images=n, margin=MARGINS["accuracy"])],
    )
