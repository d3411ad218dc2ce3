"""The CO term of a trainer method: its local heads, and :func:`attach`, which gives a base method
the term (the local heads here, the loss in :class:`~cossl_train.losses.CoLoss`). One piece,
composed by every base method; adding a base method needs no copy of it.

Directions (``co.direction``, the criterion's): ``local_to_global`` needs the local queries -- the
local projector (and predictor, for methods with one) at every position of every view's map;
``global_to_local`` needs the local targets of the global views -- for momentum methods the
momentum copy of the local projector on the momentum encoder's map, for SimCLR the online local
embeddings (computed once, shared with the queries).

Heads. By default the CO term has its own local projector (widths ``co.proj_hidden`` /
``co.pred_hidden``), built like the method's global one, and, for the global-to-local direction of
a momentum method, its momentum copy as the local targets (Figure 1's "two new local projectors").
``co.local_targets=global_heads`` takes those targets from the momentum global path at every
position instead, a space the global target's training ties it to. ``co.shared_heads=true`` uses
the method's global path for queries and targets (what follows the spatial mean -- a backbone's own
step such as ConvNeXt's norm, the pool MLP --, projector and predictor, applied at each position;
one of the paper's ablations). With ``direction=global_to_local`` alone and a momentum
method no loss would train a separate local projector, so the targets then come from the global
path and no local heads are built. Whenever a global head runs on local rows, its BatchNorm
normalises with their batch statistics and keeps its running statistics for the global rows
(:func:`~cossl_train.heads.batch_statistics_only`).

``co.grid = n`` average-pools every feature map to n x n before the local heads (the paper's n^2
local representations); 0 keeps the map as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..config import CoConfig
from ..heads import per_position
from ..losses import DIRECTIONS, CoLoss
from .base import SSLMethod, make_target

LOCAL_TARGETS = ("local_heads", "global_heads")


class LocalHeads(nn.Module):
    """The CO term's heads at every position (module docstring); owns no loss.

    Args:
        method: the base method (its global heads are reused for shared heads and global-head
            targets, never copied into this module).
        direction, grid, shared_heads, local_targets: the ``co.*`` switches.
    """

    def __init__(self, method: SSLMethod, direction: str = "both", grid: int = 0, shared_heads: bool = False,
                 local_targets: str = "local_heads") -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"co.direction={direction!r} is not one of {', '.join(DIRECTIONS)}")
        if local_targets not in LOCAL_TARGETS:
            raise ValueError(f"co.local_targets={local_targets!r} is not one of {', '.join(LOCAL_TARGETS)}")
        self.grid = int(grid)
        self.l2g = direction in ("local_to_global", "both")
        self.g2l = direction in ("global_to_local", "both")
        self.shared = shared_heads
        # a momentum method's global-to-local term alone trains no local projector: use the global path
        self.global_targets = shared_heads or local_targets == "global_heads" or (method.momentum and not self.l2g)
        self.local_projector: nn.Module | None = None
        self.local_predictor: nn.Module | None = None
        self.target_local_projector: nn.Module | None = None
        needs_projector = (self.l2g and not self.shared) or (self.g2l and not self.global_targets)
        if needs_projector:
            self.local_projector, predictor = method.make_local_heads()
            if self.l2g and not self.shared:
                self.local_predictor = predictor
            if self.g2l and method.momentum and not self.global_targets:
                self.target_local_projector = make_target(self.local_projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        if self.target_local_projector is None:
            return []
        return [(self.local_projector, self.target_local_projector)]

    def forward(self, method: SSLMethod, fmaps: Sequence[Tensor], target_fmaps: Sequence[Tensor] | None,
                num_targets: int) -> tuple[list[Tensor] | None, list[Tensor] | None]:
        """(local queries of every view, raw local targets of the global views), each (B, P, D),
        or None for a direction that is off. ``target_fmaps`` are the momentum encoder's maps (None
        without a momentum branch: the online maps of the global views are used)."""
        queries = [self.local_queries(method, f) for f in fmaps] if self.l2g else None
        if not self.g2l:
            return queries, None
        if queries is not None and self._targets_are_queries(method):
            return queries, queries[:num_targets]  # SimCLR's own local embeddings: computed once
        maps = target_fmaps if target_fmaps is not None else fmaps[:num_targets]
        return queries, [self.local_targets(method, f) for f in maps]

    def _targets_are_queries(self, method: SSLMethod) -> bool:
        """Without a momentum branch, the separate local projector's outputs are both the local
        queries and the local targets (no predictor): one pass gives the same loss and gradients."""
        return not method.momentum and not self.global_targets and not self.shared and self.local_predictor is None

    def local_queries(self, method: SSLMethod, fmap: Tensor) -> Tensor:
        """(B, C, h, w) online map -> (B, P, D) local queries."""
        if self.shared:
            return per_position(_chain(method.encoder.mean_head, method.projector, method.predictor), fmap, self.grid,
                                update_running_stats=False)
        return per_position(_chain(self.local_projector, self.local_predictor), fmap, self.grid)

    def local_targets(self, method: SSLMethod, fmap: Tensor) -> Tensor:
        """(B, C, h, w) map of the target side -> (B, P, D) raw local targets."""
        if not method.momentum:  # SimCLR: online local embeddings, with their gradient
            if self.global_targets:
                return per_position(_chain(method.encoder.mean_head, method.projector), fmap, self.grid,
                                    update_running_stats=False)
            return per_position(_chain(self.local_projector), fmap, self.grid)
        with torch.no_grad():
            if self.global_targets:
                return per_position(_chain(method.target_encoder.mean_head, method.target_projector), fmap, self.grid,
                                    update_running_stats=False)
            return per_position(_chain(self.target_local_projector), fmap, self.grid)


def _chain(*heads: nn.Module | None) -> nn.Module:
    """The heads applied one after the other (None skipped). A throw-away container: the heads stay
    registered where they are."""
    mods = [h for h in heads if h is not None]
    return mods[0] if len(mods) == 1 else nn.Sequential(*mods)


def attach(method: SSLMethod, cfg: CoConfig) -> SSLMethod:
    """Give ``method`` its CO term: local heads, and a criterion with w_s = ``cfg.local_weight`` and
    ``cfg.direction`` around the method's own pair loss.

    The heads are built under a forked RNG, so the random numbers drawn after them (online probe,
    augmentations) are the base method's: with w_s = 0 a CO run trains the base method's weights.
    """
    with torch.random.fork_rng(devices=[]):
        method.co = LocalHeads(method, cfg.direction, cfg.grid, cfg.shared_heads, cfg.local_targets)
    method.criterion = CoLoss(method.loss, cfg.local_weight, cfg.direction)
    return method
