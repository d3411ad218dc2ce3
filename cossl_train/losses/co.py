"""The CO loss: a base method's loss plus the local term of CO-SSL, on tensors, for any training loop.

L = (1 - w_s) L_g + w_s L_l. L_g is the base method's loss between global views; L_l aligns every
local embedding with the global embedding of the other view, with the base method's own loss:

* ``local_to_global``: the local queries of view a (a local projector, and predictor where the
  method has one, at every position of a's feature map) against the global target of view b;
* ``global_to_local``: the global query of view a against the local targets of view b at every
  position (a momentum local projector on the momentum encoder's map; for SimCLR, the online local
  embeddings themselves);
* ``both``: the mean of the two, so that w_s keeps its scale whatever the direction.

L_l is averaged over positions and view pairs and scaled like L_g (``pair_scale``). With w_s = 0 the
local inputs are not read and the result is the base loss exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .pair import PairLoss, view_pairs

DIRECTIONS = ("local_to_global", "global_to_local", "both")


@dataclass
class CoLossOutput:
    """What :class:`CoLoss` returns: the value to back-propagate and its parts, for logging."""

    loss: Tensor  #: (1 - w_s) L_g + w_s L_l, a scalar with its graph
    global_loss: Tensor  #: L_g, detached
    local_loss: Tensor  #: L_l, detached (0 when w_s = 0)
    #: further detached scalars: ``co_target_cos`` (mean cosine between each raw local target and the
    #: raw global target of its image and view) when the global-to-local direction is on
    metrics: dict[str, Tensor] = field(default_factory=dict)


class CoLoss(nn.Module):
    """CO-SSL's loss around a base method's :class:`~cossl_train.losses.pair.PairLoss`.

    Args:
        base: the base method's loss, e.g. ``SimCLRLoss(0.2)``, ``BYOLLoss()``, ``MoCoV3Loss(1.0)``,
            ``DINOLoss(out_dim)``.
        local_weight: w_s in [0, 1] (the paper's good range is 0.2-0.5).
        direction: ``"local_to_global"``, ``"global_to_local"`` or ``"both"``.

    Call with, per view (V views, the first T of them global; B images; P positions):

    * ``queries``: V tensors (B, D), the online global outputs compared with the targets (the
      predictor's output; the projection where there is no predictor; DINO's student logits);
    * ``targets``: T tensors (B, D), the raw outputs of the target branch (momentum projections;
      DINO's teacher logits, centred and sharpened here). Omitted for SimCLR: the queries are the targets;
    * ``local_queries``: V tensors (B, P, D), the local heads at every position (needed for
      ``local_to_global``; see :class:`~cossl_train.heads.PerPosition`);
    * ``local_targets``: T tensors (B, P, D), the raw local targets (needed for
      ``global_to_local``; for SimCLR the local queries are used when omitted);
    * ``epoch``: the fractional epoch (DINO's teacher temperature schedule);
    * ``global_loss``: L_g computed by one's own code (lightly's ``NTXentLoss``, say), in the base
      loss's units; the base loss then computes only what L_l needs (for DINO: the centred targets).

    Targets are detached by the losses that need it (BYOL, MoCo-v3, DINO), not by SimCLR's.

    >>> import torch
    >>> from cossl_train import CoLoss, SimCLRLoss
    >>> criterion = CoLoss(SimCLRLoss(temperature=0.2), local_weight=0.3)
    >>> z1, z2 = torch.randn(8, 32), torch.randn(8, 32)           # global projections of two views
    >>> l1, l2 = torch.randn(8, 9, 32), torch.randn(8, 9, 32)     # local embeddings, 3 x 3 positions
    >>> out = criterion([z1, z2], local_queries=[l1, l2])
    >>> torch.allclose(out.loss, 0.7 * out.global_loss + 0.3 * out.local_loss)
    True
    """

    def __init__(self, base: PairLoss, local_weight: float = 0.3, direction: str = "both") -> None:
        super().__init__()
        if not isinstance(base, PairLoss):
            raise InputError(f"base must be a PairLoss (SimCLRLoss, BYOLLoss, MoCoV3Loss, DINOLoss, ...), "
                             f"got {type(base).__name__}")
        if not 0.0 <= float(local_weight) <= 1.0:
            raise InputError(f"local_weight={local_weight} must lie in [0, 1] (w_s in L = (1 - w_s) L_g + w_s L_l)")
        if direction not in DIRECTIONS:
            raise InputError(f"direction={direction!r} is not one of {', '.join(DIRECTIONS)}")
        self.base = base
        # the local targets are processed by a copy with buffers of its own (DINO: a separate centre)
        self.local_base = _fresh_copy(base)
        self.local_weight = float(local_weight)
        self.direction = direction

    @property
    def l2g(self) -> bool:
        """Whether the local-to-global direction is on (local queries are needed)."""
        return self.direction in ("local_to_global", "both")

    @property
    def g2l(self) -> bool:
        """Whether the global-to-local direction is on (local targets are needed)."""
        return self.direction in ("global_to_local", "both")

    def forward(self, queries: Sequence[Tensor], targets: Sequence[Tensor] | None = None,
                local_queries: Sequence[Tensor] | None = None, local_targets: Sequence[Tensor] | None = None,
                epoch: float = 0.0, global_loss: Tensor | None = None) -> CoLossOutput:
        queries = _as_list(queries, "queries")
        targets = self._targets(queries, targets)
        shape = _check_global(queries, targets)
        processed = self.base.targets(targets, epoch)
        if global_loss is not None and not (isinstance(global_loss, Tensor) and global_loss.dim() == 0):
            raise InputError(f"global_loss has shape {_shape(global_loss)}: expected a scalar tensor (L_g)")
        loss_g = self.base.global_loss(queries, processed) if global_loss is None else global_loss
        if self.local_weight == 0:  # the local inputs are not even read: the base loss exactly
            return CoLossOutput(loss_g, loss_g.detach(), torch.zeros((), device=loss_g.device))
        loss_l, metrics = self.local_loss(queries, targets, processed, local_queries, local_targets, epoch, shape)
        loss = (1 - self.local_weight) * loss_g + self.local_weight * loss_l
        return CoLossOutput(loss, loss_g.detach(), loss_l.detach(), metrics)

    def local_loss(self, queries: list[Tensor], raw_targets: list[Tensor], targets: list[Tensor],
                   local_queries: Sequence[Tensor] | None, local_targets: Sequence[Tensor] | None,
                   epoch: float, shape: tuple[int, int]) -> tuple[Tensor, dict[str, Tensor]]:
        """L_l and its metrics, given the processed global ``targets`` (see the class docstring)."""
        pairs = view_pairs(len(queries), len(targets))
        terms, metrics = [], {}
        lq = None
        if self.l2g or (self.g2l and local_targets is None and not self.base.needs_targets):
            lq = _check_local(local_queries, "local_queries", len(queries), *shape, self.direction)
        if self.l2g:
            assert lq is not None
            terms.append(sum(self.local_base.local_to_global(lq[a], targets[b]) for a, b in pairs) / len(pairs))
        if self.g2l:
            if local_targets is None and not self.base.needs_targets:
                assert lq is not None
                local_targets = lq[: len(targets)]  # SimCLR: the online local embeddings are the targets
            lt = _check_local(local_targets, "local_targets", len(targets), *shape, self.direction)
            metrics["co_target_cos"] = target_cosine(lt, raw_targets)
            lt = self.local_base.targets(lt, epoch)
            terms.append(sum(self.local_base.global_to_local(queries[a], lt[b]) for a, b in pairs) / len(pairs))
        return self.local_base.pair_scale * sum(terms) / len(terms), metrics

    def _targets(self, queries: list[Tensor], targets: Sequence[Tensor] | None) -> list[Tensor]:
        if targets is not None:
            return _as_list(targets, "targets")
        if self.base.needs_targets:
            raise InputError(f"{type(self.base).__name__} needs targets: the target branch's outputs, one (B, D) "
                             "tensor per global view")
        return queries[:2]

    def extra_repr(self) -> str:
        return f"local_weight={self.local_weight}, direction={self.direction!r}"


def _as_list(tensors: Sequence[Tensor] | Tensor, what: str) -> list[Tensor]:
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise InputError(f"{what} must be a list with one tensor per view, got a {type(tensors).__name__}")
    return list(tensors)


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def _check_global(queries: list[Tensor], targets: list[Tensor]) -> tuple[int, int]:
    """Check the global inputs; returns (B, D)."""
    if len(queries) < 2:
        raise InputError(f"the loss needs at least two views, got {len(queries)} query tensor(s)")
    if not 1 <= len(targets) <= len(queries):
        raise InputError(f"{len(targets)} targets for {len(queries)} query views: give one target per global view "
                         "(the global views come first among the queries)")
    for what, group in (("queries", queries), ("targets", targets)):
        for i, t in enumerate(group):
            if not isinstance(t, Tensor) or t.dim() != 2:
                hint = " (local embeddings go in local_queries / local_targets)" if isinstance(t, Tensor) and \
                    t.dim() == 3 else ""
                raise InputError(f"{what}[{i}] has shape {_shape(t)}: expected (B, D), one global vector per image"
                                 f"{hint}")
    b, d = queries[0].shape
    for what, group in (("queries", queries), ("targets", targets)):
        for i, t in enumerate(group):
            if t.shape[0] != b:
                raise InputError(f"{what}[{i}] has {t.shape[0]} images, queries[0] has {b}: every view needs the "
                                 "same images in the same order")
            if t.shape[1] != d:
                raise InputError(f"{what}[{i}] has {t.shape[1]} dimensions, queries[0] has {d}: queries and targets "
                                 "are compared in one space")
    return b, d


def _check_local(local: Sequence[Tensor] | None, what: str, count: int, batch: int, dim: int,
                 direction: str) -> list[Tensor]:
    if local is None:
        raise InputError(f"direction={direction!r} needs {what}: {count} tensor(s) (B, P, D), the local heads at "
                         "every position (PerPosition on the feature map)")
    local = _as_list(local, what)
    if len(local) != count:
        raise InputError(f"{what} has {len(local)} tensor(s), expected {count} (one per "
                         f"{'view' if what == 'local_queries' else 'global view'})")
    for i, t in enumerate(local):
        if not isinstance(t, Tensor) or t.dim() != 3:
            hint = (" (a pooled vector: apply the local head at every position of the map, before pooling)"
                    if isinstance(t, Tensor) and t.dim() == 2 else
                    " (a feature map: apply the local head with PerPosition, which gives (B, h*w, D))"
                    if isinstance(t, Tensor) and t.dim() == 4 else "")
            raise InputError(f"{what}[{i}] has shape {_shape(t)}: expected (B, P, D), one row per position{hint}")
        if t.shape[0] != batch or t.shape[1] == 0 or t.shape[2] != dim:
            raise InputError(f"{what}[{i}] has shape {tuple(t.shape)}: expected ({batch}, P, {dim}) with P >= 1 "
                             "(the images of the global views, the width of the global embeddings)")
    return local


@torch.no_grad()
def target_cosine(local_targets: Sequence[Tensor], global_targets: Sequence[Tensor]) -> Tensor:
    """Mean cosine between every raw local target (B, P, D) and the raw global target (B, D) of the
    same image and view: near 0 when the two target spaces are unrelated (separate local heads at
    initialisation), and what ``co.local_targets=global_heads`` starts from otherwise."""
    cos = [F.cosine_similarity(lt.float(), gt.float().unsqueeze(1), dim=-1).mean()
           for lt, gt in zip(local_targets, global_targets, strict=False)]
    return torch.stack(cos).mean()


def _fresh_copy(loss: nn.Module) -> nn.Module:
    """A copy of ``loss`` with its own buffers, zeroed (DINO's local centre starts from zero)."""
    fresh = copy.deepcopy(loss)
    for buf in fresh.buffers():
        buf.zero_()
    return fresh
