"""The main job: BYOL against CO-BYOL in the paper's setting on the embedded default data, over
several seeds, next to a randomly initialised encoder, then every analysis of the package on the
pre-trained checkpoints, as one HTML report.

1. ``cossl-train compare`` machinery (:mod:`cossl_train.compare`): each method pre-trained with
   ``seeds`` seeds of ``configs/demo.yaml`` (an RF-limited ResNet-18 sized for the 32 px images,
   the pool MLP, w_s = 0.3), evaluated with the fast linear probe and weighted kNN on the held-out
   split, next to the random encoder of each seed; mean ± std over seeds and the paired
   difference, whatever its sign.
2. ``cossl_analysis.report.write_report`` on those checkpoints, one group per method: Figure 3B,
   Figure 4, patch dropping, internal corruption and masking, the 19 image corruptions and
   FGSM/PGD at small budgets, with the reduced settings of :data:`REPORT_OPTIONS`.

Rerunning reuses every finished run, evaluation and analysis, so an interrupted demo loses no work.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..trainer import setup_logging
from .compare import Comparison, compare, format_table, run_dir, write_results

METHODS = ("byol", "co_byol")
SEEDS = 3
CONFIG = "demo.yaml"

#: the report's reduced settings (``cossl_analysis.options.AnalysisOptions`` fields), chosen so
#: that all analyses of 6 small checkpoints take a few minutes on 2 CPU cores: 256 evaluation
#: images, ERFs averaged over 8, all 19 corruptions at severity 3, FGSM/PGD at 1 and 2 /255 with
#: 3 PGD steps, internal noise and masking at two strengths each
REPORT_OPTIONS: dict[str, Any] = {
    "images": 256, "erf_images": 8, "severities": (3,), "eps_255": (1.0, 2.0), "pgd_steps": 3,
    "internal_strengths": (0.0, 0.25, 0.5),
}


def demo_config(overrides: tuple[str, ...] = ()) -> Config:
    path = resources.files("cossl_train") / "configs" / CONFIG
    with resources.as_file(path) as p:
        return load_config(p, list(overrides))


def _report(comp: Comparison, out: Path, options: dict[str, Any], progress: bool) -> Path:
    from cossl_analysis.options import AnalysisOptions
    from cossl_analysis.report import write_report

    from ..methods import display_name

    groups = {display_name(m): [run_dir(out, m, s) / "checkpoint.pt" for s in comp.seeds] for m in comp.methods}
    return write_report(groups, out / "report", AnalysisOptions(**options), progress=progress)


def run_demo(out_dir: str | Path = "runs/demo", seeds: int = SEEDS, progress: bool = True,
             overrides: tuple[str, ...] = (), report: bool = True,
             report_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, evaluate and analyse (module docstring); returns the paths of what it wrote.
    ``report_options`` replace entries of :data:`REPORT_OPTIONS` (the tests shrink them)."""
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
    page = _report(comp, out, {**REPORT_OPTIONS, **(report_options or {})}, progress) if report else None
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; table {table}; runs in {out}/")
    if page is not None:
        print(f"report: {page}")
    return {"table": table, "report": page, "comparison": comp}

