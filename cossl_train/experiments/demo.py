"""The main job: a base method against its CO form on the embedded default data over several seeds,
next to a randomly initialised encoder (``compare``), then every analysis of the package on the
checkpoints as one HTML report (``cossl_analysis.write_report`` with :data:`REPORT_SETTINGS`).
Rerunning reuses every finished run, evaluation and analysis; docs/experiments.md says how the
pair and the budget were chosen, and the README has the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .. import jsonio
from ..atomic import atomic_write_text
from ..config import Config, load_config
from ..errors import CosslError
from ..trainer import setup_logging
from .compare import RANDOM, Comparison, compare, format_paired, format_table, report_groups, write_results

log = logging.getLogger("cossl_train")

#: the pair whose base method learned fastest here (docs/experiments.md), not the one where CO wins
METHODS = ("simclr", "co_simclr")
SEEDS = 3
CONFIG = "demo.yaml"

#: ``--preset``: the packaged config each one trains. "study" is the smallest cell of the study in
#: docs/findings.md where the CO term meets its own objective (the demo's recipe with the RF29
#: backbone at 32 px, 24 epochs)
PRESETS: dict[str, str] = {"demo": CONFIG, "study": "study.yaml"}

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


def demo_config(overrides: Sequence[str] = (), preset: str = "demo") -> Config:
    """The preset's packaged config (:data:`PRESETS`) with ``overrides``."""
    if preset not in PRESETS:
        raise CosslError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    path = resources.files("cossl_train") / "configs" / PRESETS[preset]
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

    def split(self, comp: Comparison) -> None:
        """Each run's stage split into its pre-training (the epochs) and evaluation seconds."""
        for stage in self.times:
            name, _, seed = stage["what"].rpartition(" seed ")
            if ((), name) in comp.eval_seconds and seed.isdigit():
                stage["train_seconds"] = round(comp.seconds[(), name][int(seed)], 2)
                stage["eval_seconds"] = round(comp.eval_seconds[(), name][int(seed)], 2)

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
             methods: Sequence[str] = METHODS, preset: str = "demo") -> dict[str, Any]:
    """Train, evaluate and analyse (module docstring); returns the paths of what it wrote.
    ``report_settings`` are applied after :data:`REPORT_SETTINGS` (the tests shrink them);
    ``overrides`` change the preset's config (:data:`PRESETS`)."""
    out = Path(out_dir)
    setup_logging(None)
    t0 = time.perf_counter()
    methods = check_methods(methods)
    base = demo_config(overrides, preset)
    bar = _Progress(base, methods, seeds, report, progress)
    comp = compare(base, methods, range(seeds), out, random_init=True, progress=progress, on_run=bar.run_done)
    bar.split(comp)
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
    atomic_write_text(out / "timings.json", jsonio.dumps({"wall_seconds": round(wall, 1), "stages": bar.times},
                                                       indent=2) + "\n")
    print(f"\nwall time {wall:.0f} s (stages in {out / 'timings.json'}); table {table}; runs in {out}/")
    if page is not None:
        print(f"report: {page}")
    return {"table": table, "report": page, "comparison": comp}


def split_pair(methods: Sequence[str] = METHODS) -> tuple[str, str]:
    """(base method, its CO form) of a pair such as :data:`METHODS`, in that order."""
    from ..methods import base_name

    co = [m for m in methods if m.startswith("co_")]
    base = [m for m in methods if not m.startswith("co_")]
    if len(methods) != 2 or len(co) != 1 or len(base) != 1 or base_name(co[0]) != base[0]:
        raise CosslError(f"{','.join(methods)!r} is not a base method and its CO form (e.g. simclr,co_simclr)")
    return base[0], co[0]


def find_dir(path: str | Path) -> Path:
    """``path`` when it exists; a relative path that does not is also looked up in each folder above
    the working directory (a notebook's kernel runs in ``notebooks/``, the demo writes
    ``runs/demo`` at the repository's root). Absolute; ``path`` made absolute when found nowhere."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.absolute()
    for parent in Path.cwd().parents:
        if (parent / p).exists():
            return parent / p
    return p.absolute()


@dataclass(frozen=True)
class TrainedPair:
    """Checkpoints of a base method and its CO form; ``source`` is ``"demo"`` (a finished demo's
    runs) or ``"trained"`` (runs of the demo's budget, trained or reused here); ``message`` says
    which in a sentence."""

    base: Path
    co: Path
    source: str
    message: str


def _finished_epochs(ckpt: Path) -> tuple[int, int] | None:
    """(trained, asked) epochs of a checkpoint; None when there is no readable one."""
    from ..checkpoint import CheckpointError
    from .runs import checkpoint_meta

    if not ckpt.is_file():
        return None
    try:
        epoch, stored = checkpoint_meta(ckpt)
    except CheckpointError:
        return None
    return epoch, int(stored.get("train", {}).get("epochs", epoch))


def _state(ckpt: Path, epochs: tuple[int, int] | None) -> str:
    if epochs is not None:
        return f"unfinished ({epochs[0]}/{epochs[1]} epochs)"
    return "unreadable" if ckpt.is_file() else "absent"


def trained_pair(demo_dir: str | Path, out_dir: str | Path, seed: int = 0, methods: Sequence[str] = METHODS,
                 overrides: Sequence[str] = (), progress: bool = True) -> TrainedPair:
    """Seed ``seed`` of the demo's base method and its CO form, for the notebooks' default scale.

    The demo's own checkpoints (``run_dir(demo_dir, method, seed)/checkpoint.pt``, ``demo_dir``
    looked up by :func:`find_dir`) when both are there and finished; otherwise both are pre-trained
    at the demo's budget, ``demo_config(overrides)`` with ``method.name``, ``train.seed`` and
    ``train.out_dir = out_dir/<method>`` set, by ``ensure_trained``: an interrupted run resumes and a
    finished one is reused as it is.
    """
    from ..trainer import CHECKPOINT_NAME
    from .compare import run_dir
    from .runs import ensure_trained

    pair = split_pair(methods)
    demo = find_dir(demo_dir)
    found = {m: run_dir(demo, m, seed) / CHECKPOINT_NAME for m in pair}
    status = {m: _finished_epochs(p) for m, p in found.items()}
    if all(s is not None and s[0] >= s[1] for s in status.values()):
        epochs = ", ".join(f"{m} {status[m][0]} epochs" for m in pair)  # type: ignore[index]
        return TrainedPair(found[pair[0]], found[pair[1]], "demo",
                           f"the demo's checkpoints: seed {seed} of {' and '.join(pair)} in {demo} ({epochs}); "
                           "nothing is trained here")
    missing = [f"{m} {_state(found[m], s)}" for m, s in status.items() if s is None or s[0] < s[1]]
    out = Path(out_dir).expanduser().absolute()
    why = f"no finished demo checkpoints in {demo} ({'; '.join(missing)}; `cossl-train demo` makes them)"
    setup_logging(None)  # a notebook may have no handler yet: say why before the minutes of training
    log.info("%s: seed %d of %s comes from runs of the demo's budget (%s) in %s", why, seed, " and ".join(pair),
             CONFIG, out)
    ckpts, done = [], []
    for m in pair:
        cfg = demo_config([*overrides, f"method.name={m}", f"train.seed={seed}", f"train.out_dir={out / m}"])
        before = _finished_epochs(out / m / CHECKPOINT_NAME)
        ensure_trained(cfg, progress=progress)
        ckpts.append(out / m / CHECKPOINT_NAME)
        epochs = cfg.train.epochs
        done.append(f"{m} trained here ({epochs} epochs)" if before is None else
                    f"{m} reused (finished earlier)" if before[0] >= epochs else
                    f"{m} resumed at epoch {before[0]} and trained to {epochs}")
    return TrainedPair(ckpts[0], ckpts[1], "trained",
                       f"{why}, so seed {seed} of both comes from runs of the demo's budget ({CONFIG}) in {out}: "
                       f"{'; '.join(done)}")
