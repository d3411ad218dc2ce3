"""The main job: BYOL against CO-BYOL on the embedded default data over several seeds, next to a
randomly initialised encoder (``compare``), then every analysis of the package on the checkpoints
as one HTML report (``cossl_analysis.write_report`` with :data:`REPORT_SETTINGS`). Rerunning reuses
every finished run, evaluation and analysis; docs/experiments.md has the settings and the result.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..trainer import CHECKPOINT_NAME, setup_logging
from .compare import Comparison, compare, format_table, run_dir, write_results

METHODS = ("byol", "co_byol")
SEEDS = 3
CONFIG = "demo.yaml"

#: the report's reduced settings (``cossl_analysis.AnalysisConfig`` overrides), chosen so that all
#: analyses of 6 small checkpoints take a few minutes on 2 CPU cores: 256 evaluation images, ERFs
#: averaged over 8, all 19 corruptions at severity 3, FGSM/PGD at 1 and 2 /255 with 3 PGD steps,
#: internal noise and masking at two strengths each
REPORT_SETTINGS: tuple[str, ...] = (
    "images=256", "erf.images=8", "robustness.severities=[3]", "robustness.eps=[1,2]", "robustness.pgd_steps=3",
    "internal_corruption.strengths=[0,0.25,0.5]",
)


def demo_config(overrides: tuple[str, ...] = ()) -> Config:
    path = resources.files("cossl_train") / "configs" / CONFIG
    with resources.as_file(path) as p:
        return load_config(p, list(overrides))


def _report(comp: Comparison, out: Path, settings: tuple[str, ...], progress: bool) -> Path:
    from cossl_analysis.config import load_analysis_config
    from cossl_analysis.report import write_report

    from ..methods import display_name

    groups = {display_name(m): [run_dir(out, m, s) / CHECKPOINT_NAME for s in comp.seeds] for m in comp.methods}
    return write_report(groups, out / "report", load_analysis_config(settings), progress=progress)


def run_demo(out_dir: str | Path = "runs/demo", seeds: int = SEEDS, progress: bool = True,
             overrides: tuple[str, ...] = (), report: bool = True,
             report_settings: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train, evaluate and analyse (module docstring); returns the paths of what it wrote.
    ``report_settings`` are applied after :data:`REPORT_SETTINGS` (the tests shrink them)."""
    out = Path(out_dir)
    setup_logging(None)
    t0 = time.perf_counter()
    base = demo_config(overrides)
    comp = compare(base, METHODS, range(seeds), out, random_init=True, progress=progress)
    table = write_results(comp, out)
    print(f"\nDemo: {base.data.dataset} ({base.augment.resolution} px), {base.backbone.name} width "
          f"{base.backbone.width}, {base.train.epochs} epochs, w_s = {base.co.local_weight}; {seeds} seeds, "
          f"held-out images:\n")
    print(format_table(comp))
    page = _report(comp, out, (*REPORT_SETTINGS, *report_settings), progress) if report else None
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; table {table}; runs in {out}/")
    if page is not None:
        print(f"report: {page}")
    return {"table": table, "report": page, "comparison": comp}

