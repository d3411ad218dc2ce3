"""The CO term: align every local representation with the global representation of the other
view. One piece, composed by every base method (:func:`attach`); it reuses the base method's own
loss (:class:`~cossl_train.methods.base.PairLoss`) pair by pair.

Directions (``co.direction``), for every pair (a, b) of a query view a and another global view b:

* ``local_to_global``: the local queries of view a -- the local projector (and predictor, for
  methods with one) applied at every position of a's feature map -- against view b's global
  target, with the base method's loss;
* ``global_to_local``: view a's global query against the local targets of view b at every
  position -- for momentum methods the momentum copy of the local projector on the momentum
  encoder's map, for SimCLR the online local projector;
* ``both`` (default): the mean of the two, so that w_s keeps its scale whatever the direction.

Heads. By default the CO term has its own local projector (widths ``co.proj_hidden`` /
``co.pred_hidden``), built like the method's global one, and, for the global-to-local direction of
a momentum method, its momentum copy as the local targets (Figure 1's "two new local projectors").
``co.local_targets=global_heads`` takes those targets from the momentum global path at every
position instead, a space the global target's training ties it to. ``co.shared_heads=true`` uses
the method's global path for queries and targets (pool MLP, projector, predictor applied at each
position; one of the paper's ablations). With ``direction=global_to_local`` alone and a momentum
method no loss would train a separate local projector, so the targets then come from the global
path and no local heads are built. Whenever a global head runs on local rows, its BatchNorm
normalises with their batch statistics but keeps its running statistics for the global rows
(eval-mode global features would otherwise be normalised with per-position statistics).

``co.grid = n`` average-pools every feature map to n x n before the local heads (the paper's n^2
local representations); 0 keeps the map as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import CoConfig
from ..heads import per_position
from .base import OnlineBranch, SSLMethod, make_target, view_pairs

DIRECTIONS = ("local_to_global", "global_to_local", "both")
LOCAL_TARGETS = ("local_heads", "global_heads")


class CoTerm(nn.Module):
    """Local heads plus the local/global loss of one base method (module docstring).

    Args:
        method: the base method (its global heads and loss are reused, never copied into this module).
        direction, grid, shared_heads, local_targets: the ``co.*`` switches.
    """

    def __init__(self, method: SSLMethod, direction: str = "both", grid: int = 0, shared_heads: bool = False,
                 local_targets: str = "local_heads") -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"co.direction={direction!r} is not one of {', '.join(DIRECTIONS)}")
        if local_targets not in LOCAL_TARGETS:
            raise ValueError(f"co.local_targets={local_targets!r} is not one of {', '.join(LOCAL_TARGETS)}")
        self.direction, self.grid = direction, int(grid)
        self.l2g = direction in ("local_to_global", "both")
        self.g2l = direction in ("global_to_local", "both")
        self.shared = shared_heads
        # a momentum method's global-to-local term alone trains no local projector: use the global path
        self.global_targets = shared_heads or local_targets == "global_heads" or (method.momentum and not self.l2g)
        # the local targets get their own copy of the loss: DINO keeps a separate centre for them
        self.loss = _fresh_copy(method.loss)
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

    def forward(self, method: SSLMethod, online: OnlineBranch, target_fmaps: Sequence[Tensor] | None,
                raw_targets: Sequence[Tensor], targets: Sequence[Tensor], epoch: float) -> CoOutput:
        """L_l, averaged over the view pairs and scaled like the base method's L_g."""
        pairs = view_pairs(len(online.fmaps), len(targets))
        terms, metrics = [], {}
        if self.l2g:
            local_q = [self.local_queries(method, self._grid(f)) for f in online.fmaps]
            terms.append(sum(self.loss.local_to_global(local_q[a], targets[b]) for a, b in pairs) / len(pairs))
        if self.g2l:
            maps = target_fmaps if target_fmaps is not None else online.fmaps[: len(targets)]
            if self.l2g and self._targets_are_queries(method, target_fmaps):
                # SimCLR with separate heads: the local targets are the local queries of the same maps
                # (same projector, no predictor), so reuse them; one forward and backward of the local
                # projector saved, same loss and gradients (its BatchNorm statistics move once per view)
                raw_local = local_q[: len(targets)]
            else:
                raw_local = [self.local_targets(method, self._grid(f)) for f in maps]
            metrics["co_target_cos"] = target_cosine(raw_local, raw_targets)
            local_t = self.loss.targets(raw_local, epoch)
            terms.append(sum(self.loss.global_to_local(online.queries[a], local_t[b]) for a, b in pairs) / len(pairs))
        return CoOutput(self.loss.pair_scale * sum(terms) / len(terms), metrics)

    def _targets_are_queries(self, method: SSLMethod, target_fmaps: Sequence[Tensor] | None) -> bool:
        """Whether :meth:`local_targets` of the online maps would recompute :meth:`local_queries`:
        no momentum branch, separate local heads for both and no local predictor."""
        return (target_fmaps is None and not method.momentum and not self.shared and not self.global_targets
                and self.local_predictor is None)

    def _grid(self, fmap: Tensor) -> Tensor:
        if self.grid and fmap.shape[-2:] != (self.grid, self.grid):
            return F.adaptive_avg_pool2d(fmap, self.grid)
        return fmap

    def local_queries(self, method: SSLMethod, fmap: Tensor) -> Tensor:
        """(B, C, h, w) online map -> (B, h*w, D) local queries."""
        if self.shared:
            return _per_position_keeping_stats(
                [method.encoder.head, method.projector, method.predictor], fmap)
        return per_position(_chain(self.local_projector, self.local_predictor), fmap)

    def local_targets(self, method: SSLMethod, fmap: Tensor) -> Tensor:
        """(B, C, h, w) map of the target side -> (B, h*w, D) raw local targets."""
        if not method.momentum:  # SimCLR: online local embeddings, with their gradient
            if self.global_targets:
                return _per_position_keeping_stats([method.encoder.head, method.projector], fmap)
            return per_position(self.local_projector, fmap)
        with torch.no_grad():
            if self.global_targets:
                return _per_position_keeping_stats([method.target_encoder.head, method.target_projector], fmap)
            return per_position(self.target_local_projector, fmap)


@dataclass
class CoOutput:
    loss: Tensor  #: L_l
    #: detached scalars to log (``co_target_cos`` when the global-to-local direction is on)
    metrics: dict[str, Tensor] = field(default_factory=dict)


@torch.no_grad()
def target_cosine(local_targets: Sequence[Tensor], global_targets: Sequence[Tensor]) -> Tensor:
    """Mean cosine between every raw local target (B, P, D) and the raw global target (B, D) of the
    same image and view: near 0 when the two target spaces are unrelated (separate local heads at
    initialisation), and what ``co.local_targets=global_heads`` starts from otherwise."""
    cos = [F.cosine_similarity(lt.float(), gt.float().unsqueeze(1), dim=-1).mean()
           for lt, gt in zip(local_targets, global_targets, strict=False)]
    return torch.stack(cos).mean()


@contextmanager
def _running_stats_frozen(modules: Sequence[nn.Module | None]) -> Iterator[None]:
    """BatchNorm in ``modules`` normalises with batch statistics but leaves its running statistics
    (and batch count) untouched, in train mode; eval mode is unchanged."""
    bns = [m for mod in modules if mod is not None for m in mod.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for bn in bns:
        bn.track_running_stats = False
    try:
        yield
    finally:
        for bn in bns:
            bn.track_running_stats = True


def _per_position_keeping_stats(heads: Sequence[nn.Module | None], fmap: Tensor) -> Tensor:
    """The global heads at every position, without moving their running statistics."""
    with _running_stats_frozen(heads):
        return per_position(_chain(*heads), fmap)


def _chain(*heads: nn.Module | None) -> Callable[[Tensor], Tensor]:
    """The heads applied one after the other (None skipped), as one function of the rows."""
    def apply(x: Tensor) -> Tensor:
        for head in heads:
            if head is not None:
                x = head(x)
        return x

    return apply


def _fresh_copy(loss: nn.Module) -> nn.Module:
    """A copy of the base loss with its own buffers (DINO's centre starts from zero)."""
    import copy

    fresh = copy.deepcopy(loss)
    for buf in fresh.buffers():
        buf.zero_()
    return fresh


def attach(method: SSLMethod, cfg: CoConfig) -> SSLMethod:
    """Give ``method`` its CO term and w_s = ``cfg.local_weight``.

    The term is built under a forked RNG, so the random numbers drawn after it (online probe,
    augmentations) are the base method's: with w_s = 0 a CO run trains the base method's weights.
    """
    with torch.random.fork_rng(devices=[]):
        method.co = CoTerm(method, cfg.direction, cfg.grid, cfg.shared_heads, cfg.local_targets)
    method.local_weight = float(cfg.local_weight)
    return method
