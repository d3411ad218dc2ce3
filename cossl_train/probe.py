"""The online linear probe: a BatchNorm without affine parameters, then a linear layer, trained
during pre-training on the detached global representation (why the BatchNorm: docs/training.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed as dist_utils


class OnlineProbe(nn.Module):
    """BatchNorm (no affine) + Linear on (B, C) features -> (B, classes) logits, with its own AdamW."""

    def __init__(self, dim: int, classes: int, lr: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.linear = nn.Linear(dim, classes)
        self.optimizer = torch.optim.AdamW(self.linear.parameters(), lr=lr, weight_decay=0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))

    def step(self, features: Tensor, labels: Tensor) -> tuple[int, int]:
        """One update on the labelled rows (label >= 0); returns (correct, labelled) before it.

        Under DDP the gradients and the normalisation statistics are averaged over processes, so
        every process holds the same probe.
        """
        keep = labels >= 0
        if not bool(keep.any()):
            return 0, 0
        self.train()
        logits = self(features[keep].float())
        loss = F.cross_entropy(logits, labels[keep])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if dist_utils.world_size() > 1:
            for p in self.linear.parameters():
                p.grad = dist_utils.all_reduce_mean(p.grad)
            for buf in (self.norm.running_mean, self.norm.running_var):
                buf.copy_(dist_utils.all_reduce_mean(buf))
        self.optimizer.step()
        return int((logits.argmax(1) == labels[keep]).sum()), int(keep.sum())

    @torch.no_grad()
    def as_linear(self) -> nn.Linear:
        """The probe in eval mode as one ``nn.Linear`` (running statistics folded in)."""
        scale = (self.norm.running_var + self.norm.eps).rsqrt()
        out = nn.Linear(self.linear.in_features, self.linear.out_features).to(scale.device)
        out.weight.copy_(self.linear.weight * scale)
        out.bias.copy_(self.linear.bias - (self.linear.weight * (self.norm.running_mean * scale)).sum(1))
        return out

    def full_state(self) -> dict:
        return {"model": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
