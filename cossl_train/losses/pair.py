"""The interface every base method's loss implements, so that the CO term can reuse it pair by pair.

A *pair* (a, b) is a query view a and a target view b != a, b among the global views (the first two;
multi-crop views only ever query). :class:`PairLoss` subclasses say how one global query meets one
global target (:meth:`~PairLoss.pair`), and how local embeddings (B, P, D) meet the other side
(:meth:`~PairLoss.local_to_global`, :meth:`~PairLoss.global_to_local`); the mean over pairs and the
base method's scale live here once.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def view_pairs(num_views: int, num_targets: int) -> list[tuple[int, int]]:
    """(query view, target view) pairs: every view against every other *global* view.

    >>> view_pairs(2, 2)
    [(1, 0), (0, 1)]
    >>> view_pairs(3, 2)  # a third (multi-crop) view queries both global views
    [(1, 0), (2, 0), (0, 1), (2, 1)]
    """
    return [(a, b) for b in range(num_targets) for a in range(num_views) if a != b]


class PairLoss(nn.Module):
    """A base method's loss, split by view pair.

    Subclasses define :meth:`pair` (global query (B, D) against global target (B, D)),
    :meth:`local_to_global` (local queries (B, P, D) against one global target per image) and
    :meth:`global_to_local` (a global query against local targets (B, P, D)); :meth:`targets`
    turns the raw outputs of the target branch into what the loss compares with (DINO: centring
    and sharpening); :meth:`global_loss` is the scaled mean of :meth:`pair` over the view pairs.
    """

    #: multiplier on the mean over pairs (2 where the published loss sums the two view orders)
    pair_scale: float = 1.0
    #: whether the loss supports more than two views (multi-crop)
    multi_crop: bool = True
    #: False for a method without a target branch (SimCLR): its targets are its own online
    #: outputs, so the CO loss may take the queries as targets when none are given
    needs_targets: bool = True

    def targets(self, raw: Sequence[Tensor], epoch: float) -> list[Tensor]:
        """Raw target-branch outputs -> what :meth:`pair` compares with (identity by default)."""
        return list(raw)

    def pair(self, query: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def local_to_global(self, local_query: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def global_to_local(self, query: Tensor, local_target: Tensor) -> Tensor:
        raise NotImplementedError

    def global_loss(self, queries: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        """``pair_scale`` x the mean of :meth:`pair` over :func:`view_pairs`."""
        pairs = view_pairs(len(queries), len(targets))
        return self.pair_scale * sum(self.pair(queries[a], targets[b]) for a, b in pairs) / len(pairs)
