"""The parts every method is composed of, and the one forward pass they share.

A method (:class:`SSLMethod`) is an encoder, a global projector (and predictor), a target branch
(a momentum copy of encoder and projector, or the online projections themselves), the criterion
(:class:`~cossl_train.losses.CoLoss` around the base method's
:class:`~cossl_train.losses.PairLoss`), and optionally the CO term's local heads. The base methods
differ only in the parts they pass in (``methods/byol.py``, ``dino.py``, ``mocov3.py``,
``simclr.py``); none overrides the forward. The loss parts are the public ones a user's own loop
imports (``from cossl_train import CoLoss, BYOLLoss, ...``).

Views: ``views[:2]`` are the two global views of every image; ``views[2:]`` optional small crops
(multi-crop). The online branch encodes every view; the target branch only the global views. A
*pair* (a, b) is a query view a and a target view b != a; losses are averaged over pairs and
scaled by the loss's ``pair_scale`` (2 for BYOL and MoCo-v3, whose published losses sum the two
view orders; 1 for DINO, which averages).

Total loss: L = (1 - w_s) L_g + w_s L_l with w_s = ``co.local_weight``; with w_s = 0 (or no CO
term) the local heads are not run and the criterion returns the base loss, so loss and gradients
are the base method's bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..ema import make_target
from ..encoder import Encoder
from ..losses import CoLoss, PairLoss

LocalHeadFactory = Callable[[], tuple[nn.Module, nn.Module | None]]


@dataclass
class MethodOutput:
    loss: Tensor  #: L = (1 - w_s) L_g + w_s L_l, the value to back-propagate
    loss_global: Tensor  #: L_g (detached)
    loss_local: Tensor  #: L_l (detached; 0 when there is no CO term or w_s = 0)
    #: (2B, C) detached global representations of the two global views (view 1's rows first), for
    #: the online probe
    features: Tensor
    embeddings: Tensor  #: (B, D) detached online projections of view 1, for the collapse monitor
    #: parameters whose gradient must be dropped after this step's backward (DINO's frozen last layer)
    drop_grads: tuple[nn.Parameter, ...] = field(default=())
    #: further detached scalars to log (the CO term's ``co_target_cos``)
    metrics: dict[str, Tensor] = field(default_factory=dict)


#: checkpoint keys of earlier versions -> their names now (the criterion took over the losses)
_RENAMED_KEYS = {"loss.center": "criterion.base.center", "co.loss.center": "criterion.local_base.center"}


def upgrade_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A method's state dict of an earlier version with today's key names (DINO's centres moved
    into the criterion; a base DINO had no local centre, which starts from zero)."""
    out = {_RENAMED_KEYS.get(k, k): v for k, v in state.items()}
    if "criterion.base.center" in out and "criterion.local_base.center" not in out:
        out["criterion.local_base.center"] = torch.zeros_like(out["criterion.base.center"])
    return out


@dataclass
class OnlineBranch:
    """The online side of one step: per view, the feature map, the global representation, the
    projection and the query (the predictor's output, or the projection without predictor)."""

    fmaps: list[Tensor]
    reps: list[Tensor]
    projections: list[Tensor]
    queries: list[Tensor]


class SSLMethod(nn.Module):
    """One self-supervised method composed of parts; see the module docstring.

    Args:
        encoder: feature map + pooling (``Encoder``).
        projector: global projector g (for DINO: the student head).
        predictor: global predictor q, or None.
        loss: the base method's :class:`PairLoss`.
        momentum: targets from an EMA copy of encoder and projector (BYOL, DINO, MoCo-v3); else
            the online projections of the global views are the targets (SimCLR).
        loss: the base method's pair loss; the criterion (``self.criterion``) wraps it with w_s = 0
            until the CO term is attached (``co_term.attach``).
        make_local_heads: builds the CO term's own local projector and predictor.
        frozen: parameters whose gradient is dropped while ``epoch < frozen_epochs`` (DINO).
        joint_views: encode the views of one resolution in one forward, and project all views in
            one forward (DINO's multi-crop wrapper: BatchNorm sees the 2B global crops together,
            the M*B small crops together, the teacher's 2B together); else every view alone
            (BYOL, MoCo-v3 and SimCLR, as their references).
    """

    def __init__(self, encoder: Encoder, projector: nn.Module, predictor: nn.Module | None, loss: PairLoss,
                 momentum: bool, make_local_heads: LocalHeadFactory, frozen_epochs: float = 0.0,
                 frozen: Callable[[nn.Module], list[nn.Parameter]] | None = None, joint_views: bool = False) -> None:
        super().__init__()
        self.joint_views = joint_views
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor
        self.criterion = CoLoss(loss, local_weight=0.0)
        self.momentum = momentum
        if momentum:
            self.target_encoder = make_target(encoder)
            self.target_projector = make_target(projector)
        self.make_local_heads = make_local_heads
        self.frozen_epochs = frozen_epochs
        self._frozen = frozen
        #: the CO term's local heads, set by ``co_term.attach`` after the base parts are built
        self.co: nn.Module | None = None

    @property
    def loss(self) -> PairLoss:
        """The base method's pair loss (inside the criterion)."""
        return self.criterion.base

    @property
    def local_weight(self) -> float:
        """w_s (0 without a CO term)."""
        return self.criterion.local_weight

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.encoder, self.target_encoder), (self.projector, self.target_projector)] if self.momentum else []
        return pairs + (self.co.momentum_pairs() if self.co is not None else [])

    def online(self, views: Sequence[Tensor]) -> OnlineBranch:
        fmaps, reps = self._encode(self.encoder, views)
        projections = self._project(self.projector, reps)
        queries = [self.predictor(z) for z in projections] if self.predictor is not None else projections
        return OnlineBranch(fmaps, reps, projections, queries)

    @torch.no_grad()
    def target_branch(self, views: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """(feature maps, raw targets) of the momentum branch for the global views."""
        fmaps, reps = self._encode(self.target_encoder, views)
        return fmaps, self._project(self.target_projector, reps)

    def _encode(self, encoder: Encoder, views: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per view: (feature map, global representation), both from one pass (``encoder.encode``:
        a ViT's class token is a property of the pass, not of the map); see ``joint_views``."""
        if not self.joint_views:
            encoded = [encoder.encode(v) for v in views]
            return [f for f, _ in encoded], [h for _, h in encoded]
        fmaps, reps = [], []
        for group in _same_resolution_runs(views):
            f, h = encoder.encode(torch.cat(group))
            fmaps += list(f.chunk(len(group)))
            reps += list(h.chunk(len(group)))
        return fmaps, reps

    def _project(self, projector: nn.Module, reps: Sequence[Tensor]) -> list[Tensor]:
        if not self.joint_views:
            return [projector(h) for h in reps]
        return list(projector(torch.cat(list(reps))).split([h.shape[0] for h in reps]))

    def forward(self, views: Sequence[Tensor], epoch: float = 0.0) -> MethodOutput:
        if len(views) < 2:
            raise ValueError(f"a method needs at least the two global views, got {len(views)}")
        online = self.online(views)
        if self.momentum:
            target_fmaps, raw = self.target_branch(views[:2])
        else:
            target_fmaps, raw = None, online.projections[:2]
        local_q = local_t = None
        # w_s = 0 runs no local head: loss and gradients stay the base method's bit for bit
        if self.co is not None and self.local_weight > 0:
            with torch.profiler.record_function("co_term"):
                local_q, local_t = self.co(self, online.fmaps, target_fmaps, len(raw))
        out = self.criterion(online.queries, raw, local_q, local_t, epoch)
        drop = tuple(self._frozen(self)) if self._frozen is not None and epoch < self.frozen_epochs else ()
        return MethodOutput(out.loss, out.global_loss, out.local_loss, torch.cat(online.reps[:2]).detach(),
                            online.projections[0].detach(), drop, out.metrics)


def _same_resolution_runs(views: Sequence[Tensor]) -> list[list[Tensor]]:
    """Consecutive views of one shape, grouped (DINO's ``unique_consecutive`` on the crop sizes)."""
    runs: list[list[Tensor]] = []
    for v in views:
        if runs and runs[-1][0].shape == v.shape:
            runs[-1].append(v)
        else:
            runs.append([v])
    return runs
