"""The Figure 3A grid: its cells, its scheduler outputs, and a tiny grid run end to end.

The end-to-end test trains 2 backbones x 2 c_min + 2 BYOL references for 2 steps each on the
embedded digits (width 8, 16 px), evaluates them, then reruns the grid to check that nothing is
retrained, and resumes one cell for a second epoch.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES

from cossl_train.backbones import backbone_info
from cossl_train.checkpoint import load_checkpoint
from cossl_train.config import load_config
from cossl_train.experiments.grid import (
    C_MINS,
    DEFAULT_CONFIG,
    GRID_BACKBONES,
    GridError,
    build_grid,
    cell_config,
    main,
)
from cossl_train.experiments.results import CSV_COLUMNS
from cossl_train.experiments.runs import EVAL_NAME

GRID_CONFIG = Path(__file__).resolve().parents[3] / "cossl_train" / "configs" / DEFAULT_CONFIG

#: TINY_OVERRIDES without the backbone name (the grid sets it per cell), one short epoch, a quick probe
TINY_GRID = [o for o in TINY_OVERRIDES if not o.startswith("backbone.name=")] + [
    "train.epochs=1", "train.max_steps_per_epoch=2", "train.online_probe=false", "train.channels_last=false",
    "data.limit=256", "train.batch_size=32", "eval.linear_epochs=5",
]
TINY_BACKBONES = ("rf_resnet50_rf43", "rf_resnet50_rf155")
TINY_C_MIN = (0.2, 0.7)


def test_full_grid_has_the_papers_cells(tmp_path: Path) -> None:
    cells = build_grid(load_config(GRID_CONFIG), tmp_path)
    grid = [c for c in cells if not c.reference]
    refs = [c for c in cells if c.reference]
    assert len(GRID_BACKBONES) == 8 and C_MINS == (0.1, 0.2, 0.3, 0.4, 0.7)
    assert len(grid) == 8 * 5 and len(refs) == 5 and len(cells) == 45
    assert {c.method for c in grid} == {"co_byol"} and {c.method for c in refs} == {"byol"}
    assert {c.backbone for c in refs} == {"resnet50"}
    assert {c.c_min for c in refs} == set(C_MINS)
    assert len({c.name for c in cells}) == 45 and len({c.out_dir for c in cells}) == 45
    assert all(c.out_dir == tmp_path / c.name for c in cells)
    assert "co_byol_rf_resnet50_rf43_cmin0.1" in {c.name for c in cells}
    # RF per backbone, growing, from BagNet-33 to ResNet-50 (the paper: 33 .. 425)
    rfs = {c.backbone: c.rf for c in grid}
    assert list(rfs) == list(GRID_BACKBONES)
    assert rfs == {b: backbone_info(b)["rf"] for b in GRID_BACKBONES}
    assert list(rfs.values()) == sorted(rfs.values())
    assert rfs["bagnet33"] == 33 and rfs["resnet50"] == 427 and rfs["rf_resnet50_rf43"] == 43
    assert "rf_resnet50_rf427" not in rfs  # the same network as resnet50, not trained twice


def test_grid_refuses_what_it_cannot_build(tmp_path: Path) -> None:
    base = load_config(GRID_CONFIG)
    with pytest.raises(GridError, match="unknown backbone"):
        build_grid(base, tmp_path, backbones=["rf_resnet50_rf999"])
    with pytest.raises(GridError, match="small-image"):
        build_grid(load_config(GRID_CONFIG, ["backbone.small_image=true"]), tmp_path)
    with pytest.raises(GridError, match="c_min"):
        build_grid(base, tmp_path, c_mins=[0.0])
    # the keys the grid sets per cell cannot be overridden for all cells
    assert main(["--dry-run", "backbone.name=resnet18"]) == 2
    assert main(["--dry-run", "--cells", "no_such_cell"]) == 2


def test_dry_run_lists_every_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = lines[1:-1]
    assert len(rows) == 45 and all(ln.rstrip().endswith("todo") for ln in rows)
    assert "45 cells (40 grid + 5 reference)" in lines[-1]


def test_commands_and_slurm_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print-commands", "--out", str(tmp_path), "--nproc-per-node", "2", "data.root=/d/train"]) == 0
    cmds = capsys.readouterr().out.splitlines()
    assert len(cmds) == 45
    assert all(c.startswith("torchrun --standalone --nproc_per_node=2 -m cossl_train pretrain --config ") for c in cmds)
    assert all("--resume" in c and "data.root=/d/train" in c for c in cmds)
    assert cmds[0].endswith(f"method.name=co_byol backbone.name=bagnet33 augment.c_min=0.1 "
                            f"train.out_dir={tmp_path / 'co_byol_bagnet33_cmin0.1'}")

    script = tmp_path / "grid.sbatch"
    assert main(["--slurm", str(script), "--out", str(tmp_path), "--max-parallel", "8",
                 "--sbatch=--partition=gpu", "data.root=/d/train"]) == 0
    text = script.read_text()
    assert "#SBATCH --array=0-44%8" in text and "#SBATCH --partition=gpu" in text
    assert text.count("torchrun ") == 45 and text.count("--evaluate") == 45
    assert (tmp_path / "slurm").is_dir()
    subprocess.run(["bash", "-n", str(script)], check=True)  # the script parses


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        return list(reader)


class _Killed(Exception):
    pass


def _interrupt_after_first_epoch(cfg: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train ``cfg`` and stop it right after its first checkpoint, as a killed job would."""
    import cossl_train.trainer as trainer

    real = trainer.end_epoch

    def end_then_die(*args: object, **kw: object) -> object:
        real(*args, **kw)
        raise _Killed

    monkeypatch.setattr(trainer, "end_epoch", end_then_die)
    with pytest.raises(_Killed):
        trainer.pretrain(cfg, progress=False)
    monkeypatch.setattr(trainer, "end_epoch", real)


def test_tiny_grid_runs_end_to_end_and_skips_finished_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "grid"
    args = ["--run", "--out", str(out), "--backbones", ",".join(TINY_BACKBONES),
            "--c-min", ",".join(map(str, TINY_C_MIN)), "--no-progress", *TINY_GRID]
    assert main(args) == 0
    rows = _csv(out / "results.csv")
    assert len(rows) == 4 + 2  # 2 backbones x 2 c_min + one BYOL ResNet-50 reference per c_min
    assert {(r["method"], r["backbone"], float(r["c_min"])) for r in rows} == {
        *{("co_byol", b, c) for b in TINY_BACKBONES for c in TINY_C_MIN},
        *{("byol", "resnet50", c) for c in TINY_C_MIN}}
    for r in rows:
        # the RF of the network as trained: small-image stem, width 8
        assert int(r["rf"]) == backbone_info(r["backbone"], small_image=True, width=8)["rf"]
        assert int(r["epochs"]) == 1
        for key in ("linear_top1", "linear_top5", "knn_top1"):
            assert 0.0 <= float(r[key]) <= 100.0, r
        assert float(r["linear_top5"]) >= float(r["linear_top1"])
        assert Path(r["checkpoint"]).is_file()
        assert Path(r["checkpoint"]).with_suffix(".probe.pt").is_file()
    # 10 classes: the probes beat chance on the digits even after 2 steps (random features do)
    assert max(float(r["knn_top1"]) for r in rows) > 20.0

    ckpts = sorted(out.glob("*/checkpoint.pt"))
    evals = sorted(out.glob(f"*/{EVAL_NAME}"))
    assert len(ckpts) == len(evals) == 6
    stamps = {p: p.stat().st_mtime_ns for p in [*ckpts, *evals]}

    # rerun: every cell is trained and evaluated, nothing is redone
    capsys.readouterr()
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert _csv(out / "results.csv") == rows

    # an interrupted cell (here: a 2-epoch run killed after its first epoch) resumes from its
    # checkpoint and is re-evaluated
    cell = "co_byol_rf_resnet50_rf43_cmin0.2"
    more = [a if a != "train.epochs=1" else "train.epochs=2" for a in args]
    base2 = load_config(GRID_CONFIG, [*TINY_GRID, "train.epochs=2"])
    target = next(c for c in build_grid(base2, out, TINY_BACKBONES, TINY_C_MIN) if c.name == cell)
    shutil.rmtree(target.out_dir)
    _interrupt_after_first_epoch(cell_config(base2, target), monkeypatch)
    assert load_checkpoint(target.checkpoint)["epoch"] == 1
    assert main([*more, "--cells", cell]) == 0
    state = load_checkpoint(out / cell / "checkpoint.pt")
    assert state["epoch"] == 2 and state["global_step"] == 4  # 2 steps per epoch
    assert json.loads((out / cell / EVAL_NAME).read_text())["epoch"] == 2
    assert _csv(out / "results.csv")[0]["epochs"] == "2"
    others = [p for p in stamps if cell not in str(p)]
    assert all(p.stat().st_mtime_ns == stamps[p] for p in others)

    # --dry-run reports the statuses: the resumed cell evaluated at 2 epochs, another one partial (1/2)
    capsys.readouterr()
    assert main(["--dry-run", *more[1:], "--cells", f"{cell},byol_resnet50_cmin0.7"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].endswith("evaluated") and listing[2].endswith("partial (1/2)")
