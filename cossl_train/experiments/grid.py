"""The Figure 3A grid: CO-BYOL x backbone (by RF) x c_min, plus BYOL ResNet-50 references.

``cossl-train grid`` lists, schedules (torchrun commands, a Slurm array), trains and evaluates
its cells and writes the results table; docs/experiments.md describes the cells and modes.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..backbones import PRESETS, backbone_info, list_backbones
from ..config import Config, apply_overrides, load_config
from ..errors import USER_ERRORS, CosslError
from ..trainer import CHECKPOINT_NAME
from .results import write_csv
from .runs import RunStatus, ensure_evaluated, ensure_trained, run_status

log = logging.getLogger("cossl_train.grid")

#: the paper's minimum crop scales (Figure 3A)
C_MINS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.7)
#: the reference backbone (BYOL baseline) and the network used for the largest RF
REFERENCE_BACKBONE = "resnet50"
#: default backbones, by growing RF: BagNet-33, the RF-ResNet presets below ResNet-50's RF, ResNet-50
GRID_BACKBONES: tuple[str, ...] = (
    "bagnet33",
    *(name for name in PRESETS if name != "rf_resnet50_rf427"),
    REFERENCE_BACKBONE,
)
#: the packaged base config of the grid
DEFAULT_CONFIG = "imagenet100_grid.yaml"
#: config keys set per cell; user overrides of these are refused (use --backbones, --c-min, --out)
CELL_KEYS: tuple[str, ...] = ("method.name", "backbone.name", "augment.c_min", "train.out_dir")


class GridError(CosslError, ValueError):
    """A grid that cannot be built or used as asked; the message is one line."""


# --------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One pre-training run of the grid.

    Attributes:
        method: ``method.name`` of the run (``co_byol`` for grid cells, ``byol`` for references).
        backbone: ``backbone.name``.
        c_min: ``augment.c_min``.
        rf: receptive-field side (pixels) of the backbone as built (``backbone_info``).
        out_dir: the run's ``train.out_dir``.
        reference: whether this is a baseline reference rather than a grid cell.
    """

    method: str
    backbone: str
    c_min: float
    rf: int
    out_dir: Path
    reference: bool = False

    @property
    def name(self) -> str:
        """Folder and display name, e.g. ``co_byol_rf_resnet50_rf43_cmin0.2``."""
        return cell_name(self.method, self.backbone, self.c_min)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def overrides(self) -> list[str]:
        """The dotted overrides that turn the base config into this cell's config."""
        return [f"method.name={self.method}", f"backbone.name={self.backbone}",
                f"augment.c_min={self.c_min:g}", f"train.out_dir={self.out_dir}"]


def cell_name(method: str, backbone: str, c_min: float) -> str:
    return f"{method}_{backbone}_cmin{c_min:g}"


def cell_config(base: Config, cell: Cell) -> Config:
    """The full config of ``cell``: the base config (with user overrides) plus the cell's keys."""
    return apply_overrides(base, cell.overrides())


def reference_method(method: str) -> str | None:
    """The base method of a CO method (``co_byol`` -> ``byol``); None for a base method."""
    return method[len("co_"):] if method.startswith("co_") else None


@functools.cache
def _rf(name: str, small_image: bool, width: int) -> int:
    """RF side of a backbone as built (cached: each call builds the network on the meta device)."""
    return int(backbone_info(name, small_image=small_image, width=width)["rf"])


@functools.cache
def _small_image_available(name: str) -> bool:
    return bool(backbone_info(name)["small_image_available"])


def build_grid(base: Config, out: str | Path, backbones: Sequence[str] | None = None,
               c_mins: Sequence[float] | None = None, reference: bool = True,
               method: str | None = None) -> list[Cell]:
    """The cells of the grid, grid cells first (by backbone, then c_min), then the references.

    Args:
        base: base config (user overrides applied); its ``backbone.small_image`` and
            ``backbone.width`` define the networks, hence the RF values.
        out: grid folder; cell ``c`` runs in ``out / c.name``.
        backbones: backbone names (default :data:`GRID_BACKBONES`), kept in the given order.
        c_mins: minimum crop scales (default :data:`C_MINS`).
        reference: add one ``reference_method(method)`` run on ``resnet50`` per c_min.
        method: the grid's method (default ``base.method.name``).

    Raises:
        GridError: unknown or repeated backbone, c_min outside (0, c_max], or a backbone that
            cannot be built with ``backbone.small_image``.
    """
    out = Path(out).absolute()
    backbones = list(GRID_BACKBONES if backbones is None else backbones)
    c_mins = [float(c) for c in (C_MINS if c_mins is None else c_mins)]
    method = method or base.method.name
    known = list_backbones()
    for name in backbones:
        if name not in known:
            raise GridError(f"unknown backbone {name!r}; available: {', '.join(known)}")
    for seq, what in ((backbones, "backbone"), ([f"{c:g}" for c in c_mins], "c_min")):
        dup = sorted({x for x in seq if seq.count(x) > 1})
        if dup:
            raise GridError(f"{what} {dup[0]} is listed twice")
    if not backbones or not c_mins:
        raise GridError("the grid is empty: give at least one backbone and one c_min")
    for c in c_mins:
        if not 0 < c <= base.augment.c_max:
            raise GridError(f"c_min={c:g} must satisfy 0 < c_min <= augment.c_max={base.augment.c_max:g}")

    small, width = base.backbone.small_image, base.backbone.width
    ref = reference_method(method) if reference else None

    def rf_of(name: str) -> int:
        if small and not _small_image_available(name):
            raise GridError(f"backbone {name} has no small-image stem (backbone.small_image=true); "
                            "leave it out with --backbones")
        return _rf(name, small, width)

    cells = [Cell(method, b, c, rf_of(b), out / cell_name(method, b, c)) for b in backbones for c in c_mins]
    if ref is not None:
        cells += [Cell(ref, REFERENCE_BACKBONE, c, rf_of(REFERENCE_BACKBONE),
                       out / cell_name(ref, REFERENCE_BACKBONE, c), reference=True) for c in c_mins]
    return cells


def cell_status(base: Config, cell: Cell) -> RunStatus:
    """What is on disk for ``cell`` (trained epochs, current evaluation)."""
    return run_status(cell.checkpoint, cell_config(base, cell))


# --------------------------------------------------------------------------------------------
# running, evaluating, collecting
# --------------------------------------------------------------------------------------------


@contextmanager
def _cell_log(out_dir: Path) -> Iterator[None]:
    """Send the ``cossl_train`` log to ``out_dir/train.log`` for the duration of one cell.

    The trainer attaches its file handler only once per process (to the first run's folder), so
    in-process grid runs attach and detach one per cell themselves.
    """
    from ..trainer import setup_logging

    setup_logging(None)  # stderr handler first: the trainer then leaves the handlers to us
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("cossl_train")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def _debug() -> bool:
    return bool(os.environ.get("COSSL_DEBUG"))


def run_cells(base: Config, cells: Sequence[Cell], train: bool, progress: bool = True) -> list[tuple[str, str]]:
    """Train (if ``train``) and evaluate each cell in turn; returns the (cell, error) failures.

    A finished cell is not trained again and an up-to-date evaluation is not redone, so a rerun
    after an interruption only does the missing work. One failing cell (a NaN loss, a bad
    checkpoint) is logged and skipped, so that it does not cost the rest of a long grid.
    """
    failures: list[tuple[str, str]] = []
    bar = tqdm(cells, desc="grid", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.name)
        cfg = cell_config(base, cell)
        try:
            status = run_status(cell.checkpoint, cfg)
            if not status.trained and not train:
                log.info("%s: %s, not evaluated", cell.name, status.label)
                continue
            if status.trained and status.evaluation is not None:
                log.info("%s: trained (%d epochs) and evaluated, skipped", cell.name, status.epoch)
                continue
            with _cell_log(cell.out_dir):
                if not status.trained:
                    if status.epoch:
                        log.info("%s: resuming at epoch %d of %d", cell.name, status.epoch, status.epochs)
                    ensure_trained(cfg, progress)
                ensure_evaluated(cell.checkpoint, cfg, progress)
        except Exception as e:  # noqa: BLE001 - reported per cell, the grid goes on
            if _debug():
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if isinstance(e, USER_ERRORS):
                log.error("%s failed: %s", cell.name, msg)
            else:  # a bug, not bad input: keep its traceback in the log
                log.exception("%s failed with an unexpected error", cell.name)
            failures.append((cell.name, msg))
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the next cell may be a bigger network
    bar.close()
    return failures


def collect_rows(base: Config, cells: Sequence[Cell]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the results table for the evaluated cells, and the names of the others."""
    rows, missing = [], []
    for cell in cells:
        status = cell_status(base, cell)
        ev = status.evaluation
        if ev is None:
            missing.append(f"{cell.name} ({status.label})")
            continue
        rows.append({"method": cell.method, "backbone": cell.backbone, "rf": cell.rf, "c_min": cell.c_min,
                     "epochs": status.epoch, "linear_top1": round(float(ev["linear_top1"]), 4),
                     "linear_top5": round(float(ev["linear_top5"]), 4), "knn_top1": round(float(ev["knn_top1"]), 4),
                     "checkpoint": str(cell.checkpoint)})
    return rows, missing


def format_results(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'method':<9}{'backbone':<20}{'RF':>5}{'c_min':>7}{'epochs':>8}"
             f"{'linear top-1':>14}{'top-5':>8}{'kNN top-1':>11}"]
    for r in rows:
        lines.append(f"{r['method']:<9}{r['backbone']:<20}{r['rf']:>5}{r['c_min']:>7g}{r['epochs']:>8}"
                     f"{r['linear_top1']:>14.2f}{r['linear_top5']:>8.2f}{r['knn_top1']:>11.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# commands for a scheduler
# --------------------------------------------------------------------------------------------


def train_command(cell: Cell, config: Path, overrides: Sequence[str], nproc: int) -> list[str]:
    """``torchrun`` command line that trains ``cell`` (``--resume``: a requeued job continues).

    ``--standalone`` picks a free rendezvous port, so several cells can share a node.
    """
    return ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "cossl_train", "pretrain",
            "--config", str(config), "--resume", "--no-progress", *overrides, *cell.overrides()]


def grid_command(mode: str, cells: Sequence[Cell] | None, config: Path, out: Path,
                 overrides: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """``python -m cossl_train grid <mode>`` restricted to ``cells`` (None: the whole grid)."""
    cmd = ["python", "-m", "cossl_train", "grid", mode, "--config", str(config), "--out", str(out), *extra]
    if cells is not None:
        cmd += ["--cells", ",".join(c.name for c in cells)]
    return [*cmd, "--no-progress", *overrides]


def slurm_script(cells: Sequence[Cell], config: Path, out: Path, overrides: Sequence[str], nproc: int,
                 time_limit: str, cpus_per_gpu: int, max_parallel: int | None, sbatch: Sequence[str],
                 grid_args: Sequence[str]) -> str:
    """A Slurm array script: task i trains cell i on one node, then evaluates it."""
    array = f"0-{len(cells) - 1}" + (f"%{max_parallel}" if max_parallel else "")
    lines = [
        "#!/bin/bash",
        f"# Figure 3A grid: {len(cells)} cells, one array task per cell; written by",
        "#   cossl-train grid --slurm ...",
        "# Submit from an environment where `torchrun` and `python -m cossl_train` work; a requeued or",
        "# resubmitted task resumes its cell from the last epoch (pretrain --resume). When all tasks",
        "# are done, write the results table with:",
        f"#   {shlex.join(grid_command('--collect', None, config, out, overrides, grid_args))}",
        "#SBATCH --job-name=cossl-grid",
        f"#SBATCH --array={array}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={nproc}",
        f"#SBATCH --cpus-per-task={cpus_per_gpu * nproc}",
        f"#SBATCH --time={time_limit}",
        f"#SBATCH --output={out / 'slurm'}/%x_%A_%a.log",
        "#SBATCH --requeue",
        *(f"#SBATCH {opt}" for opt in sbatch),
        "set -euo pipefail",
        "",
        'case "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch}" in',
    ]
    for i, cell in enumerate(cells):
        lines += [
            f"  {i})  # {cell.name}",
            f"    {shlex.join(train_command(cell, config, overrides, nproc))}",
            f"    {shlex.join(grid_command('--evaluate', [cell], config, out, overrides, grid_args))}",
            "    ;;",
        ]
    lines += ['  *) echo "no grid cell $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;', "esac", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cossl-train grid",
        description="Figure 3A grid: RF-ResNet backbones x c_min for CO-BYOL, plus BYOL ResNet-50 references.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="list the cells and their status (default)")
    mode.add_argument("--print-commands", action="store_true", help="print one torchrun command per cell")
    mode.add_argument("--slurm", metavar="FILE", help="write a Slurm array script (train + evaluate per task)")
    mode.add_argument("--run", action="store_true", help="train and evaluate the cells here, then write the CSV")
    mode.add_argument("--evaluate", action="store_true", help="evaluate trained cells not evaluated yet")
    mode.add_argument("--collect", action="store_true", help="--evaluate, then write the results CSV")
    p.add_argument("--config", help=f"base config (default: the packaged {DEFAULT_CONFIG})")
    p.add_argument("--out", default="runs/grid", help="grid folder, one sub-folder per cell (default: runs/grid)")
    p.add_argument("--csv", help="results table (default: <out>/results.csv)")
    p.add_argument("--backbones", type=_csv_list, help=f"comma-separated (default: {','.join(GRID_BACKBONES)})")
    p.add_argument("--c-min", type=_floats, help=f"comma-separated (default: {','.join(f'{c:g}' for c in C_MINS)})")
    p.add_argument("--method", help="the grid's method (default: the config's method.name)")
    p.add_argument("--no-reference", action="store_true", help="leave out the base-method ResNet-50 references")
    p.add_argument("--cells", type=_csv_list, help="only these cells (names as listed by --dry-run)")
    p.add_argument("--skip-done", action="store_true", help="--print-commands/--slurm: leave out trained cells")
    p.add_argument("--nproc-per-node", type=int, default=1, help="GPUs per cell for torchrun (default: 1)")
    p.add_argument("--slurm-time", default="48:00:00", help="Slurm time limit per cell (default: 48:00:00)")
    p.add_argument("--slurm-cpus-per-gpu", type=int, default=8, help="default: 8")
    p.add_argument("--max-parallel", type=int, help="Slurm: at most this many cells at once")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="extra #SBATCH line, e.g. --sbatch=--partition=gpu (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value for every cell, e.g. data.root=/data/imagenet/train")
    return p


def _resolve_config(path: str | None) -> Path:
    if path is not None:
        return Path(path).absolute()
    return Path(str(resources.files("cossl_train") / "configs" / DEFAULT_CONFIG))


def _select(cells: list[Cell], names: Sequence[str] | None) -> list[Cell]:
    if not names:
        return cells
    by_name = {c.name: c for c in cells}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise GridError(f"no cell named {unknown[0]!r} in this grid (see --dry-run)")
    return [by_name[n] for n in names]


def _grid_args(args: argparse.Namespace) -> list[str]:
    """The arguments that define the grid's cells, to repeat in generated commands."""
    out = []
    if args.backbones:
        out += ["--backbones", ",".join(args.backbones)]
    if args.c_min:
        out += ["--c-min", ",".join(f"{c:g}" for c in args.c_min)]
    if args.method:
        out += ["--method", args.method]
    if args.no_reference:
        out += ["--no-reference"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cossl-train grid``.

    Returns 0 on success, 1 when some cells failed (the others were done), 2 on a usage error.
    """
    from ..errors import report

    # intermixed: overrides may come before or after the options
    args = build_parser().parse_intermixed_args(argv)
    try:
        return _main(args)
    except USER_ERRORS as e:
        return report("cossl-train grid", e)


def _main(args: argparse.Namespace) -> int:
    from ..trainer import setup_logging

    for o in args.overrides:
        key = o.split("=", 1)[0]
        if key in CELL_KEYS:
            raise GridError(f"override {o!r}: the grid sets {key} per cell (use --backbones, --c-min, --method "
                            "or --out)")
    if args.nproc_per_node < 1:
        raise GridError(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    config = _resolve_config(args.config)
    base = load_config(config, args.overrides)
    out = Path(args.out).absolute()
    cells = build_grid(base, out, args.backbones, args.c_min, reference=not args.no_reference, method=args.method)
    cells = _select(cells, args.cells)
    progress = not args.no_progress
    setup_logging(None)

    if args.print_commands or args.slurm:
        if args.skip_done:
            cells = [c for c in cells if not cell_status(base, c).trained]
        if not cells:
            print("every selected cell is trained; nothing to schedule", file=sys.stderr)
            return 0
        if args.print_commands:
            for cell in cells:
                print(shlex.join(train_command(cell, config, args.overrides, args.nproc_per_node)))
            collect = grid_command("--collect", None, config, out, args.overrides, _grid_args(args))
            print(f"# {len(cells)} commands; when they are done: {shlex.join(collect)}", file=sys.stderr)
        else:
            script = slurm_script(cells, config, out, args.overrides, args.nproc_per_node, args.slurm_time,
                                  args.slurm_cpus_per_gpu, args.max_parallel, args.sbatch, _grid_args(args))
            (out / "slurm").mkdir(parents=True, exist_ok=True)  # Slurm does not create the log folder
            path = Path(args.slurm)
            atomic_write_text(path, script)
            path.chmod(0o755)
            print(f"wrote {path} ({len(cells)} array tasks); submit with: sbatch {path}")
        return 0

    if args.run or args.evaluate or args.collect:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise GridError("--run trains the cells one after the other in one process; for several GPUs per "
                            "cell use --print-commands or --slurm")
        failures = run_cells(base, cells, train=args.run, progress=progress)
        if args.run or args.collect:
            rows, missing = collect_rows(base, cells)
            csv_path = Path(args.csv) if args.csv else out / "results.csv"
            write_csv(rows, csv_path)
            if rows:
                print(format_results(rows))
            print(f"\n{len(rows)} of {len(cells)} cells in {csv_path}")
            if missing:
                print(f"not evaluated yet: {', '.join(missing)}")
        for name, msg in failures:
            print(f"FAILED {name}: {msg}", file=sys.stderr)
        return 1 if failures else 0

    # --dry-run (the default)
    n_ref = sum(c.reference for c in cells)
    print(f"{'#':>3}  {'cell':<36}{'method':<9}{'backbone':<20}{'RF':>5}{'c_min':>7}  status")
    for i, cell in enumerate(cells):
        status = cell_status(base, cell)
        print(f"{i:>3}  {cell.name:<36}{cell.method:<9}{cell.backbone:<20}{cell.rf:>5}{cell.c_min:>7g}  {status.label}")
    print(f"{len(cells)} cells ({len(cells) - n_ref} grid + {n_ref} reference) under {out}; "
          f"base config {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
