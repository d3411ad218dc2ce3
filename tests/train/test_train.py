"""Short pre-training runs on tiny data: loss goes down, resume is exact, bad input is refused."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, random_image_folder

from cossl_train.checkpoint import CheckpointError, load_checkpoint, load_pretrained
from cossl_train.cli import main as cli_main
from cossl_train.config import ConfigError, load_config
from cossl_train.errors import NonFiniteLossError, RunExistsError
from cossl_train.methods import method_names
from cossl_train.trainer import pretrain

TINY = [*TINY_OVERRIDES, "data.limit=256", "train.batch_size=32", "train.log_every=1"]


def tiny(tmp_path: Path, *extra: str) -> object:
    return load_config(None, [*TINY, f"train.out_dir={tmp_path}", *extra])


#: tiny-run settings under which each family learns in 24 steps of batch 32 (measured): MoCo-v3's
#: ResNet-50 temperature 1.0 barely moves a 32-image batch, and DINO's ResNet-50 head (no
#: BatchNorm) collapses to the uniform distribution on a width-8 network whose pooled features
#: are nearly the same for every image; both recipes stay the defaults.
TINY_RUN = {"mocov3": ["method.mocov3.temperature=0.2"],
            "dino": ["method.dino.head_bn=true", "method.dino.out_dim=256", "method.dino.freeze_last_layer_epochs=0"]}


@pytest.mark.parametrize("method", method_names())
def test_short_run_lowers_the_loss(tmp_path: Path, method: str) -> None:
    """Same fixed batch-order seed; the mean loss of the last epoch is below the first's, and the
    embeddings have not collapsed (DINO's uniform collapse also lowers its loss at first)."""
    base = method.removeprefix("co_")
    cfg = tiny(tmp_path, f"method.name={method}", "train.epochs=6", "data.limit=128", "train.max_steps_per_epoch=4",
               "augment.c_min=0.9", "train.seed=1", "co.local_weight=0.5", *TINY_RUN.get(base, []))
    pretrain(cfg, progress=False)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "epochs.csv")))
    assert len(rows) == 6
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    print(f"{method}: loss {first:.4f} (epoch 1) -> {last:.4f} (epoch 6)")
    assert last < first, (first, last)
    assert float(rows[-1]["embedding_std"]) > 0.2
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 6 and state["global_step"] == 24
    # the EMA momentum tau is logged only by methods that have a momentum branch (SimCLR has none)
    momentum = any(k.startswith("target_") for k in state["model"])
    assert momentum is (base != "simclr")
    assert ("tau" in rows[0]) is momentum and ("tau=" in (tmp_path / "train.log").read_text()) is momentum
    if method.startswith("co_"):
        assert float(rows[-1]["loss_local"]) > 0
    else:
        assert float(rows[-1]["loss_local"]) == 0


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """SIGKILL a real process after its first checkpoint, resume, compare every tensor."""
    args = [*TINY, "method.name=co_byol", "train.epochs=3", "train.max_steps_per_epoch=3"]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    pretrain(load_config(None, [*args, f"train.out_dir={ref_dir}"]), progress=False)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "cossl_train", "pretrain", "--no-progress", *args, f"train.out_dir={run_dir}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run_dir / "checkpoint.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch_at_kill = load_checkpoint(ckpt)["epoch"]
    assert 1 <= epoch_at_kill < 3, "the run must be killed before it finished"

    pretrain(load_config(None, [*args, f"train.out_dir={run_dir}"]), resume=True, progress=False)
    ref, got = _weights(ref_dir / "checkpoint.pt"), _weights(ckpt)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert load_checkpoint(ckpt)["epoch"] == 3


def test_existing_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, "method.name=byol", "train.epochs=1", "train.max_steps_per_epoch=1")
    pretrain(cfg, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(RunExistsError, match="--resume"):
        pretrain(cfg, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    # resuming a finished run changes nothing and returns its summary
    summary = (tmp_path / "summary.json").read_text()
    assert pretrain(cfg, resume=True, progress=False)["epoch"] == 1
    assert (tmp_path / "summary.json").read_text() == summary
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_nan_loss_stops_without_touching_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss turns NaN on the first step of epoch 2: the run stops with a one-line error and the
    checkpoint of epoch 1 is left as it was."""
    cfg = tiny(tmp_path, "method.name=byol", "train.epochs=2", "train.max_steps_per_epoch=2")
    import cossl_train.step as step

    real_build = step.build_method
    seen: dict[str, object] = {"calls": 0}

    def poisoned(c):  # noqa: ANN001, ANN202
        m = real_build(c)
        forward = m.forward

        def nan_forward(views, epoch=0.0):  # noqa: ANN001, ANN202
            out = forward(views, epoch)
            seen["calls"] = int(seen["calls"]) + 1
            if seen["calls"] == 3:  # epoch 2, step 1
                seen["before"] = (tmp_path / "checkpoint.pt").read_bytes()
                out.loss = out.loss * float("nan")
            return out

        m.forward = nan_forward
        return m

    monkeypatch.setattr(step, "build_method", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 2, step 2.*keeps the last good epoch"):
        pretrain(cfg, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert (tmp_path / "checkpoint.pt").read_bytes() == seen["before"]


def test_resume_with_another_architecture_is_refused(tmp_path: Path) -> None:
    pretrain(tiny(tmp_path, "method.name=byol", "train.epochs=1", "train.max_steps_per_epoch=1"), progress=False)
    with pytest.raises(CheckpointError, match="backbone.width=8 but the config says 16"):
        pretrain(tiny(tmp_path, "method.name=byol", "train.epochs=2", "backbone.width=16"), resume=True, progress=False)


def test_foreign_and_corrupt_checkpoints_give_one_line_errors(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    with pytest.raises(CheckpointError, match="not a cossl checkpoint"):
        load_pretrained(bogus)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_pretrained(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "missing.pt")


def test_checkpoint_of_another_model_cannot_load_into_this_one(tmp_path: Path) -> None:
    from cossl_train.checkpoint import load_state
    from cossl_train.methods import build_method

    pretrain(tiny(tmp_path, "method.name=byol", "train.epochs=1", "train.max_steps_per_epoch=1"), progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    other = build_method(tiny(tmp_path, "method.name=byol", "backbone.width=16"))
    with pytest.raises(CheckpointError, match="another architecture .*method=byol backbone=resnet18 width=8"):
        load_state(other, state["model"], tmp_path / "checkpoint.pt", state["config"])


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'train.epoch'"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="co.direction='sideways'"):
        load_config(None, ["co.direction=sideways"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  nme: sgd\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*'optim.nme'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="backbone.name='resnet7' is not one of resnet18"):
        from cossl_train.methods import build_method

        build_method(load_config(None, ["backbone.name=resnet7"]))


def test_cli_prints_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        ["pretrain", "train.epochz=1"],
        ["pretrain", "backbone.name=resnet7", f"train.out_dir={tmp_path / 'a'}", *TINY[:1]],
        ["pretrain", "data.dataset=imagefolder", f"data.root={tmp_path / 'no_such_dir'}", f"train.out_dir={tmp_path}"],
        ["knn", str(tmp_path / "missing.pt")],
    ]
    for argv in cases:
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cossl-train: error:") and "\n" not in err, err
    assert "no_such_dir" in (cli_main(cases[2]) == 2 and capsys.readouterr().err)


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=-1", "optim.lr=-1.0 must be >= 0"),
    ("backbone.width=0", "backbone.width=0 must be >= 1"),
    ("augment.blur_p=[0.5,2]", "augment.blur_p=[0.5, 2.0] must be >= 0 and <= 1"),
    ("method.dino.student_temp=0", "method.dino.student_temp=0.0 must be > 0"),
    ("optim.momentum=nan", "optim.momentum=nan must be >= 0 and < 1"),
    ("eval.linear_crop_scale=[0.9,0.1]", "eval.linear_crop_scale=[0.9, 0.1] must be (min, max)"),
])
def test_bad_numbers_are_one_line_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture, override: str,
                                                 message: str) -> None:
    assert cli_main(["pretrain", override, f"train.out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cossl-train: error:") and "\n" not in err and message in err, err
    assert not (tmp_path / "run").exists()  # refused before anything was built or written


def test_every_numeric_key_has_a_range() -> None:
    """A numeric key added later must get its range (or an explicit check in ``validate``)."""
    import dataclasses

    from cossl_train.config import RANGES, Config

    def leaves(obj: object, prefix: str = "") -> list[tuple[str, object]]:
        out = []
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            out += leaves(v, f"{prefix}{f.name}.") if dataclasses.is_dataclass(v) else [(prefix + f.name, v)]
        return out

    checked_in_validate = {"augment.c_min", "augment.c_max", "co.local_weight", "co.grid", "train.epochs",
                           "train.batch_size", "train.accum_steps", "train.seed", "train.keep_epochs"}
    numeric = {k for k, v in leaves(Config()) if isinstance(v, (int, float, tuple)) and not isinstance(v, bool)}
    assert numeric - set(RANGES) == checked_in_validate
    for key in checked_in_validate:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [f"{key}=-1"])


def test_cli_pretrain_then_offline_evaluation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert cli_main(["pretrain", "--no-progress", *TINY, "method.name=co_byol", "train.epochs=1",
                     "train.max_steps_per_epoch=2", f"train.out_dir={out}"]) == 0
    ckpt = out / "checkpoint.pt"
    assert cli_main(["linear-probe", "--no-progress", str(ckpt), "eval.linear_epochs=5"]) == 0
    assert "fast linear probe (frozen centre-crop features encoded once): top-1" in capsys.readouterr().out
    assert (out / "checkpoint.probe.pt").exists() and (out / "checkpoint.linear_fast.json").exists()
    assert cli_main(["knn", "--no-progress", str(ckpt), "eval.knn_k=5"]) == 0
    assert "weighted kNN (k=5): top-1" in capsys.readouterr().out
    assert cli_main(["knn", str(ckpt), "backbone.width=4"]) == 2  # the model may not change
    for f in ("metrics.jsonl", "epochs.csv", "config.yaml", "summary.json", "train.log"):
        assert (out / f).exists(), f


def test_unreadable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    """A folder where half the files are corrupt or truncated trains, and the log counts them."""
    import csv

    random_image_folder(tmp_path / "data", per_class=4)
    for cls in ("a", "b"):
        (tmp_path / "data" / cls / "bad.jpg").write_bytes(b"not an image at all")
        good = (tmp_path / "data" / cls / "0.png").read_bytes()
        for i in range(3):
            (tmp_path / "data" / cls / f"cut{i}.png").write_bytes(good[: len(good) // 3])
    out = tmp_path / "run"
    cfg = load_config(None, [*TINY_OVERRIDES, "data.dataset=imagefolder", f"data.root={tmp_path / 'data'}",
                             "train.batch_size=4", "train.epochs=1", "method.name=byol", f"train.out_dir={out}"])
    pretrain(cfg, progress=False)
    row = next(csv.DictReader(open(out / "epochs.csv")))
    assert int(row["skipped_images"]) == 8  # 2 x (1 corrupt + 3 truncated) of 16 files
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_epochs_csv_keeps_columns_aligned_when_one_appears_later(tmp_path: Path) -> None:
    """kNN every 2 epochs: its column first appears in epoch 2; every value stays under its header."""
    import csv

    from cossl_train.metrics import MetricsLogger

    m = MetricsLogger(tmp_path, tensorboard=False)
    m.log_epoch(1, {"loss": 3.0, "lr": 0.1})
    m.log_epoch(2, {"loss": 2.0, "lr": 0.05, "knn_top1": 41.0})
    m.log_epoch(3, {"loss": 1.5, "lr": 0.02})
    rows = list(csv.DictReader(open(tmp_path / "epochs.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [r["knn_top1"] for r in rows] == ["", "41.0", ""]
    assert [r["loss"] for r in rows] == ["3.0", "2.0", "1.5"] and [r["lr"] for r in rows] == ["0.1", "0.05", "0.02"]


@pytest.mark.parametrize(("change", "message"), [
    ("train.batch_size=16", "train.batch_size=32 but the config says 16"),
    ("train.epochs=3", "train.epochs=2 but the config says 3"),
    ("optim.lr=0.01", "optim.lr=0.002 but the config says 0.01"),
    ("augment.c_min=0.5", "augment.c_min=0.08 but the config says 0.5"),
])
def test_resume_that_would_bend_the_schedules_is_refused(tmp_path: Path, change: str, message: str) -> None:
    base = ["method.name=byol", "train.epochs=2", "train.max_steps_per_epoch=1"]
    pretrain(tiny(tmp_path, *base), progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=message):
        pretrain(tiny(tmp_path, *base, change), resume=True, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_resume_with_another_world_size_is_refused(tmp_path: Path) -> None:
    from cossl_train.checkpoint import check_resume_compatible

    cfg = tiny(tmp_path, "method.name=byol", "train.epochs=1", "train.max_steps_per_epoch=1")
    pretrain(cfg, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    check_resume_compatible(state, cfg, 1, "ckpt")  # the same world: fine
    with pytest.raises(CheckpointError, match="written by 1 process.*this run has 2"):
        check_resume_compatible(state, cfg, 2, "ckpt")


def test_programming_errors_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only expected errors become one-line messages: a bare ValueError from a bug propagates."""
    import cossl_train.trainer as trainer

    def buggy(*args: object, **kw: object) -> None:
        raise ValueError("an index went wrong")

    monkeypatch.setattr(trainer, "pretrain", buggy)
    with pytest.raises(ValueError, match="an index went wrong"):
        cli_main(["pretrain", *TINY])


@pytest.mark.parametrize("method", ["byol", "co_mocov3", "co_dino"])
def test_multi_crop_run_trains_on_every_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """augment.local_crops=2: every step hands the method 2 global + 2 small views."""
    import cossl_train.step as step

    seen: list[list[tuple[int, ...]]] = []
    real = step.augment

    def spy(parts, views, *args):  # noqa: ANN001, ANN002, ANN202
        out = real(parts, views, *args)
        seen.append([tuple(v.shape) for v in out])
        return out

    monkeypatch.setattr(step, "augment", spy)
    cfg = tiny(tmp_path, f"method.name={method}", "train.epochs=1", "train.max_steps_per_epoch=2",
               "augment.local_crops=2", "augment.local_resolution=8", "method.dino.out_dim=32")
    summary = pretrain(cfg, progress=False)
    assert seen and all(s == [(32, 3, 16, 16)] * 2 + [(32, 3, 8, 8)] * 2 for s in seen)
    assert math.isfinite(summary["loss"])


def test_kept_epochs_are_the_runs_checkpoints_at_those_epochs(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, "method.name=co_simclr", "train.epochs=3", "train.max_steps_per_epoch=2",
               "train.keep_epochs=[1,3]")
    pretrain(cfg, progress=False)
    assert sorted(p.name for p in tmp_path.glob("epoch[0-9]*")) == ["epoch001", "epoch003"]
    first, last = load_checkpoint(tmp_path / "epoch001" / "checkpoint.pt"), load_checkpoint(tmp_path / "epoch003" /
                                                                                           "checkpoint.pt")
    assert (first["epoch"], first["global_step"], last["epoch"]) == (1, 2, 3)
    assert (tmp_path / "epoch003" / "checkpoint.pt").read_bytes() == (tmp_path / "checkpoint.pt").read_bytes()
    assert (tmp_path / "epoch001" / "config.yaml").read_text() == (tmp_path / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="train.keep_epochs=\\[4\\]: 4 is not an epoch of this run \\(1-3\\)"):
        tiny(tmp_path, "train.epochs=3", "train.keep_epochs=[4]")
