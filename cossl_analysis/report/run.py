"""Running a command's analyses on checkpoints and writing them up: ``OUT/<command>.html`` (plots
embedded, raw files linked) and the run's record in ``OUT/manifest.json``."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cossl_analysis.config import AnalysisConfig
from cossl_analysis.registry import Analysis, plan
from cossl_analysis.report.loading import stamp_provenance
from cossl_analysis.report.paired import MARGINS, Metric, comparisons, paired_rows
from cossl_analysis.report.session import BINOMIAL_NOTE, PCT, Section, Session, Table, open_session, pm

__all__ = ["run_analyses", "write_report"]


def _probe_needs(config: AnalysisConfig, analyses: Sequence[Analysis]) -> tuple[str, str]:
    """(what needs a probe, the setting that would spare it) for the messages; ("", "") for nothing."""
    needing = [a for a in analyses if a.probe_needed(config)]
    if not needing:
        return "", ""
    # the way out without a probe, where the one analysis that needs it has one
    return f"the {needing[0].command} analysis", needing[0].without_probe if len(needing) == 1 else ""


def preflight(session: Session, analyses: Sequence[Analysis]) -> None:
    """Everything that can be refused is refused before the first (possibly long) probe training or
    analysis runs: the analyses' checks, and labels where a probe will score them."""
    from cossl_analysis.report.probes import require_probes

    what, _ = _probe_needs(session.config, analyses)
    if what:
        require_probes([], session.data, what)
    for a in analyses:
        if a.check is not None:
            a.check(session)


def probe_metrics(session: Session) -> list[Metric]:
    """The scores measured when this run trained every model's probe (on the full evaluation split)."""
    scores = [m.probe_scores for m in session.models]
    if not scores or any(s is None for s in scores):
        return []
    n = {int(s["n_val"]) for s in scores if s is not None}
    size = n.pop() if len(n) == 1 else None
    return [Metric(f"{name} top-1, full evaluation split (%)", {m.label: m.probe_scores[key]  # type: ignore[index]
                                                                 for m in session.models}, digits=1, n_images=size,
                   margin=MARGINS["accuracy"])
            for name, key in (("probe", "probe_top1"), ("kNN", "knn_top1"))]


def run_metrics(session: Session, sections: Sequence[Section]) -> list[Metric]:
    """Every summary number of the run, each once (the first section to give it), in report order."""
    out: dict[str, Metric] = {}
    for metric in [*probe_metrics(session), *[m for s in sections for m in s.metrics]]:
        out.setdefault(metric.name, metric)
    return list(out.values())


def _group_cell(metric: Metric, models: Sequence[Any]) -> str:
    values = [metric.values.get(m.label) for m in models]
    if metric.n_images:  # a top-1 in %: a single seed shows its binomial error
        return pm([None if v is None else v / PCT for v in values], PCT, metric.digits, metric.n_images)
    return pm(values, 1.0, metric.digits)


def summary_table(session: Session, metrics: Sequence[Metric]) -> Table:
    """Per group: its seeds, its probe and every summary number (mean ± std over the seeds)."""
    rows = [[g, str(len(models)), session.probe_text(models), *[_group_cell(k, models) for k in metrics]]
            for g, models in session.groups().items()]
    return Table("Summary", ["group", "seeds", "probe", *[k.name for k in metrics]], rows if metrics else [],
                 BINOMIAL_NOTE)


def paired_table(records: Sequence[dict[str, Any]], title: str = "Paired comparisons") -> Table | None:
    """The paired differences as a table (None when no two groups meet)."""
    if not records:
        return None
    notes = sorted({f"{r['a']} - {r['b']}: {r['note']}" for r in records if r["note"]})
    rows = [[str(r["metric"]), f"{r['a']} - {r['b']}", str(r["per_seed"]), str(r["summary"]).split(" (")[0],
             f"{r['positive']}/{r['n']}", "-" if r["resolvable"] is None else f"±{r['resolvable']:.3g}",
             str(r["which_way"])] for r in records]
    note = ("Differences a - b of the seeds paired by train.seed; 'resolves' is the half-width of the 95% confidence "
            "interval of the mean difference (t over the pairs): a mean inside it is not told apart from 0."
            + (" " + "; ".join(notes) + "." if notes else ""))
    return Table(title, ["measure", "comparison", "per seed", "mean ± std", "> 0", "resolves", "which way"], rows,
                 note)


def _with_paired(section: Section, found: Sequence[Any]) -> Section:
    """The section with the paired differences of its own numbers, where groups meet."""
    table = paired_table(paired_rows(section.metrics, found), "paired differences by seed")
    return section if table is None else dataclasses.replace(section, tables=[*section.tables, table])


def _models_table(session: Session) -> Table:
    rows = [[m.label, m.group, m.method, m.source, "-" if m.epoch is None else str(m.epoch),
             "-" if m.seed is None else str(m.seed), "-" if m.c_min is None else f"{m.c_min:g}", m.description,
             m.provenance_text, m.probe_source] for m in session.models]
    return Table("Models", ["label", "group", "method", "checkpoint or spec", "epoch", "seed", "c_min",
                            "representations", "weights", "probe"], rows)


def render(session: Session, sections: Sequence[Section], command: str, argv: Sequence[str],
           summary: Table, paired: Table | None) -> Path:
    """``out/<command>.html`` from the package template (jinja2); returns its path."""
    import jinja2

    from cossl_train.atomic import atomic_write_text

    env = jinja2.Environment(loader=jinja2.PackageLoader("cossl_analysis.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters["png_base64"] = lambda path: base64.b64encode((session.out / path).read_bytes()).decode()
    data = session.data
    files = sorted({f for s in sections for f in s.files})
    page = env.get_template("report.html.j2").render(
        title="CO-SSL analysis report" if command == "report" else f"cossl-analysis {command}",
        generated=f"{dt.datetime.now():%Y-%m-%d %H:%M}", command=" ".join(["cossl-analysis", *argv]),
        data={"description": data.description, "n": len(data), "split_size": data.split_size,
              "subset": data.indices is not None, "seed": session.config.seed, "resolution": data.images.shape[-1],
              "num_classes": data.num_classes, "skipped": data.skipped},
        computed=session.store.puts, reused=session.store.reused, notes=session.notes,
        checkpoints=_models_table(session),
        summary=summary, paired=paired, sections=sections, files=files,
        options=json.dumps(session.config.as_dict(), indent=1, default=str))
    path = session.out / f"{command}.html"
    atomic_write_text(path, page)
    return path


def _record_run(session: Session, command: str, argv: Sequence[str], sections: Sequence[Section], html: Path,
                summary: Table, paired: Sequence[dict[str, Any]]) -> None:
    """Record one command in ``out/manifest.json`` (earlier runs of other commands kept)."""
    from cossl_analysis.report.files import write_json
    from cossl_analysis.report.loading import PROBE_KINDS

    path = session.out / "manifest.json"
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        manifest = {}  # a damaged manifest is rewritten rather than failing the run
    runs = manifest.get("commands") if isinstance(manifest.get("commands"), dict) else {}
    data = session.data
    header = summary.header
    runs[command] = {
        "argv": list(argv), "options": session.config.as_dict(), "overrides": session.overrides,
        "device": str(session.device), "html": html.name, "notes": list(session.notes),
        "files": sorted({f for s in sections for f in s.files}),
        "evaluation": {"description": data.description, "split": data.split, "n_images": len(data),
                       "split_size": data.split_size, "indices": data.indices, "skipped": data.skipped,
                       "resolution": int(data.images.shape[-1]), "labelled": data.labels is not None,
                       "num_classes": data.num_classes},
        "models": [{"label": m.label, "group": m.group, "kind": "external" if m.is_external else "cossl",
                    "checkpoint": m.source, "method": m.method_name, "backbone": m.backbone, "epoch": m.epoch,
                    "seed": m.seed, "c_min": m.c_min, "probe": m.probe_source, "probe_kind": PROBE_KINDS[m.probe_kind],
                    "representations": m.description, "fingerprint": m.fingerprint, "provenance": m.provenance}
                   for m in session.models],
        "summary": {s.key: {g: {k.name: _group_cell(k, models) for k in s.metrics}
                            for g, models in session.groups().items()} for s in sections},
        "summary_table": {"header": header, "rows": summary.rows},
        "paired": list(paired),
    }
    write_json({"commands": runs}, path)


def run_analyses(command: str, paths: Sequence[str | Path], out: Path, config: AnalysisConfig,
                 overrides: Sequence[str] = (), labels: Sequence[str] | None = None, progress: bool = True,
                 argv: Sequence[str] = ()) -> Path:
    """Run ``command``'s analyses on the checkpoints (``overrides``: their data.*, augment.*, eval.*);
    returns the HTML page written in ``out``."""
    analyses = plan(command, config)
    from cossl_analysis.report.probes import require_probes

    what, without = _probe_needs(config, analyses)
    session = open_session(paths, Path(out), config, overrides, labels, bool(what), progress, what, without,
                           before_probes=lambda s: preflight(s, analyses))
    if what:
        require_probes(session.models, session.data, what, without)
    sections = [dataclasses.replace(a.build(session), key=a.name, title=a.title)
                for a in tqdm(analyses, desc=command, disable=not progress or len(analyses) < 2)]
    found = comparisons(session.groups())
    sections = [_with_paired(s, found) for s in sections]
    stamp_provenance(session.out, sorted({f for s in sections for f in s.files}), session.models)
    metrics = run_metrics(session, sections)
    records = paired_rows(metrics, found)
    summary = summary_table(session, metrics)
    html = render(session, sections, command, argv, summary, paired_table(records))
    _record_run(session, command, argv, sections, html, summary, records)
    return html


def write_report(groups: Mapping[str, Sequence[str | Path]], out: str | Path, config: AnalysisConfig | None = None,
                 progress: bool = True, overrides: Sequence[str] = ()) -> Path:
    """Every analysis on checkpoints given by group (label -> its seeds) as ``out/report.html``;
    rerunning with the same ``out`` reuses every finished result."""
    paths = [p for seeds in groups.values() for p in seeds]
    labels = [g for g, seeds in groups.items() for _ in seeds]
    return run_analyses("report", paths, Path(out), config or AnalysisConfig(), overrides, labels, progress,
                        ["report", *map(str, paths), "--out", str(out), "--labels", ",".join(labels)])
