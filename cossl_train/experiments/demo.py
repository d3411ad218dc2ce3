"""The main job: a base method against its CO form on the embedded default data over several seeds,
next to a randomly initialised encoder (``compare``), then every analysis of the package on the
checkpoints as one HTML report (``cossl_analysis.write_report`` with :data:`REPORT_SETTINGS`).
Rerunning reuses every finished run, evaluation and analysis; docs/experiments.md says how the
pair and the budget were chosen, and the README has the result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..config import Config, load_config
from ..errors import CosslError
from ..trainer import setup_logging
from .compare import RANDOM, Comparison, compare, format_paired, format_table, report_groups, write_results

#: the pair whose base method learned fastest here (docs/experiments.md), not the one where CO wins
METHODS = ("simclr", "co_simclr")
SEEDS = 3
CONFIG = "demo.yaml"

#: the report's reduced settings (``cossl_analysis.AnalysisConfig`` overrides), chosen so that all
#: analyses of 6 small checkpoints take about a minute on 2 CPU cores: 256 evaluation images, ERFs
#: averaged over 8, all 19 corruptions at severity 3, FGSM/PGD at 1 and 2 /255 with 3 PGD steps,
#: internal noise and masking at two strengths each
REPORT_SETTINGS: tuple[str, ...] = (
    "images=256", "erf.images=8", "robustness.severities=[3]", "robustness.eps=[1,2]", "robustness.pgd_steps=3",
    "internal_corruption.strengths=[0,0.25,0.5]",
)
#: the report's share of the overall progress bar, in units of one training epoch (measured: the
#: report takes about as long as one run's training)
REPORT_UNITS = 8


def demo_config(overrides: Sequence[str] = ()) -> Config:
    path = resources.files("cossl_train") / "configs" / CONFIG
    with resources.as_file(path) as p:
        return load_config(p, list(overrides))


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    from ..methods import method_names

    bad = [m for m in methods if m not in method_names()]
    if bad or not methods:
        raise CosslError(f"--methods {','.join(methods)!r}: each must be one of {', '.join(method_names())}")
    return tuple(methods)


class _Progress:
    """One bar over the whole demo (runs, evaluations, the report) with an ETA across them; each
    run's own epoch bar shows under it. Units: one training epoch; an evaluation counts as one."""

    def __init__(self, base: Config, methods: Sequence[str], seeds: int, report: bool, enabled: bool) -> None:
        self.epochs = base.train.epochs
        total = len(methods) * seeds * (self.epochs + 1) + seeds + (REPORT_UNITS if report else 0)
        self.bar = tqdm(total=total, desc="demo", unit="epoch", disable=not enabled, position=0)
        self.times: list[dict[str, Any]] = []
        self._t = time.perf_counter()

    def run_done(self, label: str) -> None:
        now = time.perf_counter()
        self.times.append({"what": label, "seconds": round(now - self._t, 2)})
        self._t = now
        self.bar.update(1 if label.startswith(RANDOM) else self.epochs + 1)

    def report_done(self) -> None:
        now = time.perf_counter()
        self.times.append({"what": "report", "seconds": round(now - self._t, 2)})
        self.bar.update(REPORT_UNITS)
        self.bar.close()


def _report(comp: Comparison, out: Path, settings: Sequence[str], progress: bool) -> Path:
    from cossl_analysis.config import load_analysis_config
    from cossl_analysis.report import write_report

    return write_report(report_groups(comp, out), out / "report", load_analysis_config(settings), progress=progress)


def run_demo(out_dir: str | Path = "runs/demo", seeds: int = SEEDS, progress: bool = True,
             overrides: Sequence[str] = (), report: bool = True, report_settings: Sequence[str] = (),
             methods: Sequence[str] = METHODS) -> dict[str, Any]:
    """Train, evaluate and analyse (module docstring); returns the paths of what it wrote.
    ``report_settings`` are applied after :data:`REPORT_SETTINGS` (the tests shrink them)."""
    out = Path(out_dir)
    setup_logging(None)
    t0 = time.perf_counter()
    methods = check_methods(methods)
    base = demo_config(overrides)
    bar = _Progress(base, methods, seeds, report, progress)
    comp = compare(base, methods, range(seeds), out, random_init=True, progress=progress, on_run=bar.run_done)
    table = write_results(comp, out)
    print(f"\nDemo: {base.data.dataset} ({base.augment.resolution} px), {base.backbone.name} width "
          f"{base.backbone.width}, {base.train.epochs} epochs, w_s = {base.co.local_weight}; {seeds} seeds, "
          f"held-out images:\n")
    print(format_table(comp))
    print(f"\nPaired by seed:\n{format_paired(comp)}")
    page = _report(comp, out, (*REPORT_SETTINGS, *report_settings), progress) if report else None
    if report:
        bar.report_done()
    else:
        bar.bar.close()
    wall = time.perf_counter() - t0
    atomic_write_text(out / "timings.json", json.dumps({"wall_seconds": round(wall, 1), "stages": bar.times},
                                                       indent=2) + "\n")
    print(f"\nwall time {wall:.0f} s (stages in {out / 'timings.json'}); table {table}; runs in {out}/")
    if page is not None:
        print(f"report: {page}")
    return {"table": table, "report": page, "comparison": comp}
