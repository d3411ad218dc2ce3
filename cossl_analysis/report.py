"""Running analyses on checkpoints and writing them up as one self-contained HTML page.

* :func:`run_analyses`: what every ``cossl-analysis`` subcommand does: open a session (checkpoints,
  the shared evaluation images, the cell store of ``out``), check the request, run the analyses
  of the command, write their figures and raw numbers, render ``out/<command>.html`` (plots
  embedded, raw files linked) and record the run in ``out/manifest.json``.
* :func:`write_report`: the full report (every analysis) from Python, checkpoints given by group.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cossl_analysis.options import AnalysisOptions
from cossl_analysis.session import Section, Session, open_session

__all__ = ["COMMANDS", "run_analyses", "write_report"]

#: subcommand -> the analyses it runs (see ``cossl_analysis.sections.BUILDERS``), in report order
COMMANDS: dict[str, tuple[str, ...]] = {
    "erf": ("erf",),
    "similarity": ("similarity",),
    "patch-drop": ("patch_drop",),
    "internal-corruption": ("internal",),
    "robustness": ("internal", "corruption", "adversarial", "large_crop"),
    "report": ("similarity", "erf", "patch_drop", "internal", "corruption", "adversarial", "large_crop"),
}
_SWEEP_OF = {"internal": "internal", "corruption": "corruption", "adversarial": "adversarial"}


def plan(command: str, options: AnalysisOptions) -> list[str]:
    """The analyses ``command`` runs; ``--sweeps`` selects among the robustness sweeps."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    planned = COMMANDS[command]
    if command in ("robustness", "report"):
        planned = tuple(a for a in planned if a not in _SWEEP_OF or _SWEEP_OF[a] in options.sweeps)
    return list(planned)


def needs_probes(analyses: Sequence[str], options: AnalysisOptions) -> bool:
    from cossl_analysis.sections import PROBE_SECTIONS

    return any(a in PROBE_SECTIONS for a in analyses) or ("patch_drop" in analyses and options.drop_accuracy)


def preflight(session: Session, analyses: Sequence[str]) -> None:
    """Everything that can be refused is refused before the first (possibly long) analysis runs."""
    from cossl_analysis.errors import AnalysisError
    from cossl_analysis.probes import require_probes
    from cossl_analysis.robustness import check_dependencies, resolve_layer

    if needs_probes(analyses, session.options):
        what = "probe accuracy under patch dropping" if analyses == ["patch_drop"] else f"the {analyses[0]} analysis"
        alternative = "pass --no-accuracy or --train-probe" if analyses == ["patch_drop"] else "pass --train-probe"
        require_probes(session.models, session.data, what, alternative)
    if "internal" in analyses:
        for m in session.models:
            try:
                resolve_layer(m.encoder, session.options.layer)
            except AnalysisError as err:
                raise AnalysisError(f"{m.label}: {err}") from None
    check_dependencies([a for a in analyses if a in ("corruption", "adversarial")])
    if "similarity" in analyses and len(session.data) < 2:
        raise AnalysisError("the similarity analysis needs --images 2 or more")


def _png_base64(path: str, root: Path) -> str:
    return base64.b64encode((root / path).read_bytes()).decode()


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

    env = jinja2.Environment(loader=jinja2.PackageLoader("cossl_analysis", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters["png_base64"] = lambda path: _png_base64(path, session.out)
    data = session.data
    checkpoints = {"header": ["label", "group", "method", "checkpoint", "epoch", "c_min", "probe"],
                   "rows": [[m.label, m.group, m.method, str(m.path), m.pretrained.epoch, f"{m.c_min:g}",
                             m.probe_source] for m in session.models]}
    files = sorted({f for s in sections for f in s.files})
    page = env.get_template("report.html.j2").render(
        title="CO-SSL analysis report" if command == "report" else f"cossl-analysis {command}",
        generated=f"{dt.datetime.now():%Y-%m-%d %H:%M}", command=" ".join(["cossl-analysis", *argv]),
        data={"description": data.description, "n": len(data), "split_size": data.split_size,
              "subset": data.indices is not None, "seed": session.options.seed, "resolution": data.images.shape[-1],
              "num_classes": data.num_classes, "skipped": data.skipped},
        computed=session.store.puts, reused=session.store.hits, checkpoints=checkpoints,
        summary=_summary_table(session, sections), sections=sections, files=files,
        options=json.dumps(session.options.as_dict(), indent=1, default=str))
    path = session.out / f"{command}.html"
    atomic_write_text(path, page)
    return path


def _record_run(session: Session, command: str, argv: Sequence[str], sections: Sequence[Section], html: Path) -> None:
    """Record one command in ``out/manifest.json`` (earlier runs of other commands kept)."""
    from cossl_analysis._utils import write_json

    path = session.out / "manifest.json"
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        manifest = {}  # a damaged manifest is rewritten rather than failing the run
    runs = manifest.get("commands") if isinstance(manifest.get("commands"), dict) else {}
    data = session.data
    runs[command] = {
        "argv": list(argv), "options": session.options.as_dict(), "overrides": session.overrides,
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


def run_analyses(
    command: str,
    paths: Sequence[str | Path],
    out: Path,
    options: AnalysisOptions,
    overrides: Sequence[str] = (),
    labels: Sequence[str] | None = None,
    progress: bool = True,
    argv: Sequence[str] = (),
) -> Path:
    """Run ``command``'s analyses on the checkpoints; returns the HTML page written in ``out``."""
    from cossl_analysis.sections import BUILDERS

    analyses = plan(command, options)
    session = open_session(paths, Path(out), options, overrides, labels, needs_probes(analyses, options), progress)
    preflight(session, analyses)
    sections = [BUILDERS[a](session) for a in tqdm(analyses, desc=command, disable=not progress or len(analyses) < 2)]
    html = render(session, sections, command, argv)
    _record_run(session, command, argv, sections, html)
    return html


def write_report(
    groups: Mapping[str, Sequence[str | Path]],
    out: str | Path,
    options: AnalysisOptions | None = None,
    progress: bool = True,
    overrides: Sequence[str] = (),
) -> Path:
    """The full report on checkpoints given by group (label -> its seeds); returns ``out/report.html``.

    Every analysis runs (Figure 3B similarity, Figure 4 ERFs, patch dropping, internal noise and
    masking, image corruptions, FGSM/PGD, large-crop study) with ``options`` (default
    ``AnalysisOptions()``); rerunning with the same ``out`` reuses every finished result.
    """
    paths = [p for seeds in groups.values() for p in seeds]
    labels = [g for g, seeds in groups.items() for _ in seeds]
    return run_analyses("report", paths, Path(out), options or AnalysisOptions(), overrides, labels, progress,
                        ["report", *map(str, paths), "--out", str(out), "--labels", ",".join(labels)])
