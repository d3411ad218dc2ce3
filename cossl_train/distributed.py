"""Process-group helpers: the same calls work in one process and under torchrun."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather of equal-sized parts whose backward all-reduces the full gradient and keeps this
    process's rows: every process receives the gradient of its rows summed over all processes' losses."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup) -> Tensor:  # noqa: ANN001
        ctx.group = group
        ctx.rows = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        start = dist.get_rank(ctx.group) * ctx.rows
        return grad[start:start + ctx.rows], None


def gather_rows(x: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``x`` (B, ...) from all processes along dim 0, keeping gradients, and return it
    with the row of this process's first element in it (the ``offset`` of the contrastive losses).

    Processes may hold different numbers of rows (a batch that lost unreadable images): parts are
    padded to the largest for the collective and trimmed after, so row ``offset + b`` is always
    this process's row b. The backward pass sends each process the gradient of its own rows
    summed over all processes' losses. In a single process: ``(x, 0)``.
    """
    if not is_distributed() or world_size() == 1:
        return x, 0
    group = _gather_group()
    sizes_t = torch.zeros(world_size(), dtype=torch.long, device=x.device)
    sizes_t[rank()] = x.shape[0]
    dist.all_reduce(sizes_t, group=group)
    sizes = sizes_t.tolist()
    top = max(sizes)
    padded = x if x.shape[0] == top else torch.cat([x, x.new_zeros((top - x.shape[0], *x.shape[1:]))])
    full = _GatherWithGrad.apply(padded, group)
    if min(sizes) == top:
        return full, rank() * top
    parts = [full[r * top:r * top + n] for r, n in enumerate(sizes)]
    return torch.cat(parts), sum(sizes[:rank()])


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from all processes along dim 0, keeping gradients (see
    :func:`gather_rows`, which also gives this process's offset)."""
    return gather_rows(x)[0]


_GATHER_GROUP = None


def _gather_group() -> dist.ProcessGroup:
    """A process group of its own for the embedding gathers: their backward collectives run in
    the autograd pass while DDP all-reduces gradient buckets on the default group, and sharing
    one group would let the two interleave in a different order on different processes."""
    global _GATHER_GROUP
    if _GATHER_GROUP is None:
        _GATHER_GROUP = dist.new_group()
    return _GATHER_GROUP


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over processes (no gradient)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over processes (no gradient); for logging."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()


def init_from_env() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU.
    Returns whether this call joined it (False in one process or when already joined)."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    # torch.distributed.nn.functional binds ``group=group.WORLD`` as default arguments when it is
    # first imported (torch._dynamo imports it lazily): imported after the group exists, it would
    # keep the group alive until interpreter exit, where its threads can abort the process.
    import torch.distributed.nn.functional  # noqa: F401

    backend = "nccl" if torch.cuda.is_available() and os.environ.get("COSSL_BACKEND") != "gloo" else "gloo"
    dist.init_process_group(backend)
    return True


def leave(sync: bool = True) -> None:
    """Leave the process group so that no communication thread outlives it.

    A gloo worker thread can still hold the last reference to a finished collective (and so to a
    Python tensor) just after ``wait()`` returned. If the interpreter is already shutting down when
    that thread asks for the GIL, the thread is torn down mid-destructor and the process aborts
    ("terminate called without an active exception"). The groups are therefore destroyed here,
    while Python is alive: a barrier (``sync``) so no process tears down a connection another still
    uses, then ``destroy_process_group``, then dropping our own reference to the gather group and
    collecting cycles (a DDP wrapper in a cycle keeps the default group alive), so that each
    group's destructor joins its threads now. Call it after dropping the DDP-wrapped model.
    """
    global _GATHER_GROUP
    if not is_distributed():
        return
    if sync:
        dist.barrier()
    _GATHER_GROUP = None
    dist.destroy_process_group()
    gc.collect()


@contextmanager
def process_group() -> Iterator[None]:
    """Join the torchrun process group (if launched by torchrun) for the block, and leave it the same
    way on every process when the block ends: with a barrier after success, without one after an
    error (another process may be gone). Nested use joins and leaves once."""
    joined = init_from_env()
    try:
        yield
    except BaseException:
        if joined:
            leave(sync=False)
        raise
    if joined:
        leave()


def any_process(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any process (so that all processes take the same branch)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap_ddp(module: torch.nn.Module, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
    """DistributedDataParallel with SyncBatchNorm on CUDA (torch's SyncBatchNorm refuses CPU
    tensors, so under gloo on CPU each process keeps its own batch statistics)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DDP(module, device_ids=[device.index], find_unused_parameters=find_unused)
    return DDP(module, find_unused_parameters=find_unused)
