"""Projector and predictor MLPs, for global vectors and for every local position."""

from __future__ import annotations

from torch import Tensor, nn

from .encoder import local_features


class MLP(nn.Module):
    """Linear-BN-ReLU-Linear, BYOL's projector/predictor: (N, in_dim) -> (N, out_dim)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def per_position(mlp: nn.Module, fmap: Tensor) -> Tensor:
    """Apply ``mlp`` to every local representation: (B, C, h, w) -> (B, h*w, D).

    The map is flattened to (B*h*w, C) so BatchNorm1d normalises over all positions of all
    images (never over a (B, hw, C) tensor, where BatchNorm1d would treat hw as channels).
    """
    b = fmap.shape[0]
    rows = local_features(fmap).reshape(-1, fmap.shape[1])
    out = mlp(rows)
    return out.view(b, -1, out.shape[-1])


def per_row(mlp: nn.Module, x: Tensor) -> Tensor:
    """Apply ``mlp`` to (B, P, D) local embeddings: (B, P, D) -> (B, P, D'), BatchNorm over all B*P rows."""
    b, p, d = x.shape
    out = mlp(x.reshape(b * p, d))
    return out.view(b, p, -1)
