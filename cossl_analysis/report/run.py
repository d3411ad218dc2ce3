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
from cossl_analysis.report.session import Section, Session, open_session

__all__ = ["run_analyses", "write_report"]


def preflight(session: Session, analyses: Sequence[Analysis]) -> None:
    """Everything that can be refused is refused before the first (possibly long) analysis runs."""
    from cossl_analysis.report.probes import require_probes

    needing = [a for a in analyses if a.probe_needed(session.config)]
    if needing:
        # the way out without a probe, where the one analysis that needs it has one
        without = needing[0].without_probe if len(needing) == 1 else ""
        alternative = "pass train_probe=true" + (f" or {without}" if without else "")
        require_probes(session.models, session.data, f"the {needing[0].command} analysis", alternative)
    for a in analyses:
        if a.check is not None:
            a.check(session)


def _summary_table(session: Session, sections: Sequence[Section]) -> dict[str, Any]:
    """Per group, the headline numbers of every section that ran."""
    columns: list[str] = []
    for s in sections:
        for values in s.headline.values():
            columns += [c for c in values if c not in columns]
    rows = [[g, str(len(models)), *[next((s.headline[g][c] for s in sections if c in s.headline.get(g, {})), "-")
                                    for c in columns]] for g, models in session.groups().items()]
    return {"header": ["group", "seeds", *columns], "rows": rows if columns else []}


def render(session: Session, sections: Sequence[Section], command: str, argv: Sequence[str]) -> Path:
    """``out/<command>.html`` from the package template (jinja2); returns its path."""
    import jinja2

    from cossl_train.atomic import atomic_write_text

    env = jinja2.Environment(loader=jinja2.PackageLoader("cossl_analysis.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters["png_base64"] = lambda path: base64.b64encode((session.out / path).read_bytes()).decode()
    data = session.data
    checkpoints = {"header": ["label", "group", "method", "checkpoint", "epoch", "c_min", "probe"],
                   "rows": [[m.label, m.group, m.method, str(m.path), m.pretrained.epoch, f"{m.c_min:g}",
                             m.probe_source] for m in session.models]}
    files = sorted({f for s in sections for f in s.files})
    page = env.get_template("report.html.j2").render(
        title="CO-SSL analysis report" if command == "report" else f"cossl-analysis {command}",
        generated=f"{dt.datetime.now():%Y-%m-%d %H:%M}", command=" ".join(["cossl-analysis", *argv]),
        data={"description": data.description, "n": len(data), "split_size": data.split_size,
              "subset": data.indices is not None, "seed": session.config.seed, "resolution": data.images.shape[-1],
              "num_classes": data.num_classes, "skipped": data.skipped},
        computed=session.store.puts, reused=session.store.hits, checkpoints=checkpoints,
        summary=_summary_table(session, sections), sections=sections, files=files,
        options=json.dumps(session.config.as_dict(), indent=1, default=str))
    path = session.out / f"{command}.html"
    atomic_write_text(path, page)
    return path


def _record_run(session: Session, command: str, argv: Sequence[str], sections: Sequence[Section], html: Path) -> None:
    """Record one command in ``out/manifest.json`` (earlier runs of other commands kept)."""
    from cossl_analysis.report.files import write_json

    path = session.out / "manifest.json"
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        manifest = {}  # a damaged manifest is rewritten rather than failing the run
    runs = manifest.get("commands") if isinstance(manifest.get("commands"), dict) else {}
    data = session.data
    runs[command] = {
        "argv": list(argv), "options": session.config.as_dict(), "overrides": session.overrides,
        "device": str(session.device), "html": html.name, "files": sorted({f for s in sections for f in s.files}),
        "evaluation": {"description": data.description, "split": data.split, "n_images": len(data),
                       "split_size": data.split_size, "indices": data.indices, "skipped": data.skipped,
                       "resolution": int(data.images.shape[-1]), "labelled": data.labels is not None},
        "models": [{"label": m.label, "group": m.group, "checkpoint": str(m.path), "method": m.config.method.name,
                    "backbone": m.config.backbone.name, "epoch": m.pretrained.epoch, "c_min": m.c_min,
                    "probe": m.probe_source, "fingerprint": m.fingerprint} for m in session.models],
        "summary": {s.key: s.headline for s in sections},
    }
    write_json({"commands": runs}, path)


def run_analyses(command: str, paths: Sequence[str | Path], out: Path, config: AnalysisConfig,
                 overrides: Sequence[str] = (), labels: Sequence[str] | None = None, progress: bool = True,
                 argv: Sequence[str] = ()) -> Path:
    """Run ``command``'s analyses on the checkpoints (``overrides``: their data.*, augment.*, eval.*);
    returns the HTML page written in ``out``."""
    analyses = plan(command, config)
    need_probes = any(a.probe_needed(config) for a in analyses)
    session = open_session(paths, Path(out), config, overrides, labels, need_probes, progress)
    preflight(session, analyses)
    sections = [dataclasses.replace(a.build(session), key=a.name, title=a.title)
                for a in tqdm(analyses, desc=command, disable=not progress or len(analyses) < 2)]
    html = render(session, sections, command, argv)
    _record_run(session, command, argv, sections, html)
    return html


def write_report(groups: Mapping[str, Sequence[str | Path]], out: str | Path, config: AnalysisConfig | None = None,
                 progress: bool = True, overrides: Sequence[str] = ()) -> Path:
    """Every analysis on checkpoints given by group (label -> its seeds) as ``out/report.html``;
    rerunning with the same ``out`` reuses every finished result."""
    paths = [p for seeds in groups.values() for p in seeds]
    labels = [g for g, seeds in groups.items() for _ in seeds]
    return run_analyses("report", paths, Path(out), config or AnalysisConfig(), overrides, labels, progress,
                        ["report", *map(str, paths), "--out", str(out), "--labels", ",".join(labels)])
