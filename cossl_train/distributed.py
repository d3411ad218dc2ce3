"""Process-group helpers: the same calls work in one process and under torchrun."""

from __future__ import annotations

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


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from all processes along dim 0, keeping gradients.

    The backward pass sends each process the gradient of its own rows summed over all
    processes, so with DDP's gradient averaging the result equals one process on the
    concatenated batch. Returns ``x`` itself in a single process.
    """
    if not is_distributed() or world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over processes (no gradient); for logging."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()
