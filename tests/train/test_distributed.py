"""Two gloo processes on CPU equal one process on the concatenated batch; DDP resume is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, random_image_folder
from torch import nn

from cossl_train.checkpoint import load_checkpoint
from cossl_train.config import load_config
from cossl_train.methods import build_method

HERE = Path(__file__).parent


def make_method(name: str) -> nn.Module:
    """The method in float64 with BatchNorm on running statistics (see _ddp_worker.py)."""
    cfg = load_config(None, [*TINY_OVERRIDES, f"method.name={name}", "co.local_weight=0.7", "method.dino.out_dim=32"])
    torch.manual_seed(0)
    model = build_method(cfg).double()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


def full_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return (torch.rand(8, 3, 16, 16, generator=g, dtype=torch.float64),
            torch.rand(8, 3, 16, 16, generator=g, dtype=torch.float64))


def _torchrun(args: list[str], **kw: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.Popen(cmd, env=env, cwd=HERE.parents[1], **kw)  # type: ignore[arg-type]


DDP_METHODS = ["byol", "co_byol", "simclr", "co_simclr", "co_dino", "co_mocov3"]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One two-process launch runs every method's step (_ddp_worker.py); its folder of results."""
    out = tmp_path_factory.mktemp("ddp")
    proc = _torchrun([str(HERE / "_ddp_worker.py"), ",".join(DDP_METHODS), str(out)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, log[-3000:]
    for rank in (0, 1):
        # A gloo thread alive at interpreter exit can abort the process after a successful run.
        threads = torch.load(out / f"threads.{rank}", weights_only=True)
        assert threads["threads_after"] == threads["threads_before"], threads
    return out


@pytest.mark.parametrize("method", DDP_METHODS)
def test_two_processes_equal_one_process(ddp_results: Path, method: str) -> None:
    ddp = torch.load(ddp_results / f"{method}.pt", weights_only=True)
    model = make_method(method)
    v1, v2 = full_batch()
    single = model([v1, v2])
    single.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    assert ddp["loss"].item() == pytest.approx(single.loss.item(), rel=1e-12)
    assert grads.keys() == ddp["grads"].keys() and len(grads) > 10
    for name, g in grads.items():
        torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-9, atol=1e-12, msg=name)


def test_killed_two_process_run_resumes_exactly(tmp_path: Path) -> None:
    args = [*TINY_OVERRIDES, "data.limit=256", "train.batch_size=16", "method.name=co_simclr",
            "train.epochs=3", "train.max_steps_per_epoch=3"]
    run = ["-m", "cossl_train", "pretrain", "--no-progress"]
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"

    ref = _torchrun([*run, *args, f"train.out_dir={ref_dir}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert ref.wait(timeout=600) == 0, ref.stderr.read().decode()[-3000:]

    proc = _torchrun([*run, *args, f"train.out_dir={killed_dir}"], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = killed_dir / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
    proc.wait()
    assert 1 <= load_checkpoint(ckpt)["epoch"] < 3

    resumed = _torchrun([*run, "--resume", *args, f"train.out_dir={killed_dir}"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-3000:]
    a, b = load_checkpoint(ref_dir / "checkpoint.pt"), load_checkpoint(ckpt)
    assert a["epoch"] == b["epoch"] == 3 and a["world_size"] == b["world_size"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_gathered_negatives_stay_aligned_with_uneven_batches(tmp_path: Path) -> None:
    """3 rows on one process, 5 on the other (a batch that lost unreadable images): every process
    sees all 8 keys in order, its positives at its own offset, and the gradient of one process on
    all 8 rows (the sum of both processes' losses)."""
    sys.path.insert(0, str(HERE))
    from _ddp_uneven_worker import SIZES, rows

    from cossl_train.losses import nt_xent_loss

    out = tmp_path / "uneven"
    proc = _torchrun([str(HERE / "_ddp_uneven_worker.py"), str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, log[-3000:]
    z1, z2 = (x.clone().requires_grad_() for x in rows())
    starts = [0, SIZES[0]]
    total = sum(nt_xent_loss(z1[s:s + n], z2[s:s + n], z1, z2, 0.5, s) for s, n in zip(starts, SIZES, strict=True))
    total.backward()
    for rank, (s, n) in enumerate(zip(starts, SIZES, strict=True)):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert got["offset"] == s
        torch.testing.assert_close(got["keys"], z1.detach(), rtol=0, atol=0)
        expected = nt_xent_loss(z1[s:s + n], z2[s:s + n], z1, z2, 0.5, s)
        assert got["loss"].item() == pytest.approx(expected.item(), rel=1e-12)
        torch.testing.assert_close(got["grad1"], z1.grad[s:s + n], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["grad2"], z2.grad[s:s + n], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["co_simclr", "co_mocov3"])
def test_two_process_run_with_a_corrupt_file_in_one_shard(tmp_path: Path, method: str) -> None:
    """One unreadable image among 16 leaves one process a smaller batch: the contrastive losses
    gather uneven batches, the run finishes, and the skipped image is counted over both shards."""
    import csv

    random_image_folder(tmp_path / "data", per_class=8)
    (tmp_path / "data" / "b" / "3.png").write_bytes(b"not an image")
    out = tmp_path / "run"
    args = [*TINY_OVERRIDES, "data.dataset=imagefolder", f"data.root={tmp_path / 'data'}", "train.batch_size=4",
            "train.epochs=1", f"method.name={method}", "co.local_weight=0.5", f"train.out_dir={out}"]
    proc = _torchrun(["-m", "cossl_train", "pretrain", "--no-progress", *args], stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-3000:]
    row = next(csv.DictReader(open(out / "epochs.csv")))
    assert int(row["skipped_images"]) == 1
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
