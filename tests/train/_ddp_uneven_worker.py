"""Run by tests/train/test_distributed.py under torchrun: 2 gloo processes holding 3 and 5 rows.

Each process gathers its rows with ``gather_rows``, scores SimCLR's NT-Xent for its own queries
against all keys, back-propagates, and writes what it saw (the gathered keys, its offset, its loss,
the gradient of its rows) for the test to compare with one process on the 8 rows.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from cossl_train import distributed as dist_utils
from cossl_train.losses import nt_xent_loss

SIZES = (3, 5)


def rows() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return (torch.randn(sum(SIZES), 4, generator=g, dtype=torch.float64),
            torch.randn(sum(SIZES), 4, generator=g, dtype=torch.float64))


def main(out: str) -> None:
    with dist_utils.process_group():
        step(out)


def step(out: str) -> None:
    rank = dist.get_rank()
    start = sum(SIZES[:rank])
    z1, z2 = (x[start:start + SIZES[rank]].clone().requires_grad_() for x in rows())
    (k1, offset), (k2, _) = dist_utils.gather_rows(z1), dist_utils.gather_rows(z2)
    loss = nt_xent_loss(z1, z2, k1, k2, 0.5, offset)
    loss.backward()
    torch.save({"keys": k1.detach(), "offset": offset, "loss": loss.detach(), "grad1": z1.grad, "grad2": z2.grad},
               f"{out}.{rank}")


if __name__ == "__main__":
    main(sys.argv[1])
