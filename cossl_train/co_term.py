"""The CO term: align every local representation with the global representation of the other
view (DESIGN.md section 1). One piece, composed by any base method.

A base method hands the CO term, per view v in (1, 2):
  - ``fmaps[v]``        (B, C, h, w) online feature maps,
  - ``global_pred[v]``  (B, D) online global embeddings (BYOL: q(g(h)); SimCLR: g(h)),
  - ``global_target[v]``(B, D) global targets (BYOL: g_xi(h_xi), detached; SimCLR: g(h)),
  - ``target_fmaps[v]`` (B, C, h, w) momentum-encoder maps (BYOL only, for global_to_local).
The term returns L_l, symmetrised over the two views; with direction ``both`` it is the mean
of the local-to-global and global-to-local terms, so lambda keeps its scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .ema import make_target
from .heads import MLP, per_position, per_row
from .losses import byol_loss, global_to_local_infonce, local_to_global_infonce

Gather = Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


class CoTerm(nn.Module):
    """Local heads plus the local/global loss.

    kind ``byol``: online local projector g_l, local predictor q_l and a momentum local
    projector g_l,xi (EMA of g_l, used by the global-to-local direction); the loss is BYOL's
    2 - 2 cos. kind ``infonce``: a local projector g_l only; the loss is InfoNCE with the other
    images' global embeddings (gathered across processes) as negatives.
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int,
        proj_hidden: int,
        pred_hidden: int,
        kind: str = "byol",
        direction: str = "both",
        temperature: float = 0.2,
    ) -> None:
        super().__init__()
        if kind not in ("byol", "infonce"):
            raise ValueError(f"CoTerm kind {kind!r} is not one of byol, infonce")
        if direction not in ("local_to_global", "global_to_local", "both"):
            raise ValueError(f"co.direction={direction!r} is not one of local_to_global, global_to_local, both")
        self.kind, self.direction, self.temperature = kind, direction, temperature
        self.local_projector = MLP(in_dim, proj_hidden, embed_dim)
        if kind == "byol":
            self.local_predictor = MLP(embed_dim, pred_hidden, embed_dim)
            self.target_local_projector = make_target(self.local_projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.local_projector, self.target_local_projector)] if self.kind == "byol" else []

    def forward(
        self,
        fmaps: Sequence[Tensor],
        global_pred: Sequence[Tensor],
        global_target: Sequence[Tensor],
        target_fmaps: Sequence[Tensor] | None = None,
        gather: Gather = _identity,
        offset: int = 0,
    ) -> Tensor:
        terms = []
        pairs = ((0, 1), (1, 0))  # (view of the local side's query, view of the other image)
        if self.direction in ("local_to_global", "both"):
            terms.append(sum(self._local_to_global(fmaps[a], global_target[b], gather, offset) for a, b in pairs) / 2)
        if self.direction in ("global_to_local", "both"):
            if self.kind == "byol" and target_fmaps is None:
                raise ValueError("global_to_local with BYOL needs the momentum encoder's feature maps")
            other = target_fmaps if self.kind == "byol" else fmaps
            terms.append(sum(self._global_to_local(global_pred[a], other[b], gather, offset) for a, b in pairs) / 2)
        return sum(terms) / len(terms)

    def _local_to_global(self, fmap: Tensor, target: Tensor, gather: Gather, offset: int) -> Tensor:
        z_local = per_position(self.local_projector, fmap)  # (B, P, D)
        if self.kind == "byol":
            return byol_loss(per_row(self.local_predictor, z_local), target.detach().unsqueeze(1))
        return local_to_global_infonce(z_local, gather(target), self.temperature, offset)

    def _global_to_local(self, pred: Tensor, other_fmap: Tensor, gather: Gather, offset: int) -> Tensor:
        if self.kind == "byol":
            with torch.no_grad():  # the momentum local projector gives targets only
                z_local = per_position(self.target_local_projector, other_fmap)
            return byol_loss(pred.unsqueeze(1), z_local)
        z_local = per_position(self.local_projector, other_fmap)  # (B, P, D)
        return global_to_local_infonce(pred, gather(z_local), self.temperature, offset)

