"""Run by tests/train/test_distributed.py under torchrun (2 gloo processes on CPU).

For each method named (comma-separated: one launch serves every method, since starting two
processes costs more than their steps), each process takes its half of a fixed batch, runs one
forward/backward of the method wrapped in DistributedDataParallel, and rank 0 saves the mean loss
and the (DDP-averaged) gradients in OUT_DIR/METHOD.pt. Every
process also records its thread count before joining and after leaving the process group.
BatchNorm runs on running statistics so per-process batch statistics cannot differ from the
single-process run (torch's SyncBatchNorm refuses CPU tensors).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # test_distributed, conftest
from test_distributed import full_batch, make_method  # noqa: E402

from cossl_train import distributed as dist_utils  # noqa: E402


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def main(method_names: str, out_dir: str) -> None:
    before = threads()
    with dist_utils.process_group():
        for name in method_names.split(","):
            step(name, str(Path(out_dir) / f"{name}.pt"))
    # Leaving the group must join every communication thread before the interpreter exits
    # (a gloo thread still alive at exit can abort the process).
    torch.save({"threads_before": before, "threads_after": threads()}, Path(out_dir) / f"threads.{os.environ['RANK']}")


def step(method_name: str, out: str) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_method(method_name)
    ddp = dist_utils.wrap_ddp(model, torch.device("cpu"))
    v1, v2 = full_batch()
    b = v1.shape[0] // world
    part = slice(rank * b, (rank + 1) * b)
    result = ddp([v1[part], v2[part]])
    result.loss.backward()
    loss = dist_utils.all_reduce_mean(result.loss)
    if rank == 0:
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"loss": loss, "grads": grads}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
