"""The four methods, each composed of an encoder, global heads, a loss and optionally the CO term.

``byol`` and ``co_byol`` are one class (``BYOL``) with and without a ``CoTerm``; the same holds
for ``simclr`` / ``co_simclr``. A new base method composes ``CoTerm`` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import distributed as dist_utils
from .co_term import CoTerm
from .config import Config
from .ema import make_target
from .encoder import Encoder, global_pool
from .heads import MLP
from .losses import byol_loss, nt_xent_loss


@dataclass
class MethodOutput:
    loss: Tensor  #: L = L_g + lambda * L_l, the value to back-propagate
    loss_global: Tensor  #: L_g (detached)
    loss_local: Tensor  #: L_l (detached; 0 when there is no CO term or lambda = 0)
    features: Tensor  #: (B, C) detached global representation of view 1, for the online probe
    embeddings: Tensor  #: (B, D) detached online projections of view 1, for the collapse monitor


def _zero(like: Tensor) -> Tensor:
    return torch.zeros((), device=like.device, dtype=torch.float32)


class BYOL(nn.Module):
    """BYOL (and CO-BYOL when ``co`` is given): online encoder + projector + predictor, momentum
    encoder + projector; L_g = mean over both view orders of 2 - 2 cos(q(g(h_a)), sg[g_xi(h_b)])."""

    def __init__(self, encoder: Encoder, proj_hidden: int, proj_dim: int, pred_hidden: int,
                 co: CoTerm | None = None, lam: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = MLP(encoder.num_features, proj_hidden, proj_dim)
        self.predictor = MLP(proj_dim, pred_hidden, proj_dim)
        self.target_encoder = make_target(encoder)
        self.target_projector = make_target(self.projector)
        self.co = co  # built last by build_method, so base parts are seeded as in plain BYOL
        self.lam = lam

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]
        return pairs + (self.co.momentum_pairs() if self.co is not None else [])

    def forward(self, v1: Tensor, v2: Tensor) -> MethodOutput:
        fmaps = [self.encoder(v1), self.encoder(v2)]
        hs = [global_pool(f) for f in fmaps]
        zs = [self.projector(h) for h in hs]
        preds = [self.predictor(z) for z in zs]
        with torch.no_grad():
            target_fmaps = [self.target_encoder(v1), self.target_encoder(v2)]
            targets = [self.target_projector(global_pool(f)) for f in target_fmaps]
        loss_g = (byol_loss(preds[0], targets[1]) + byol_loss(preds[1], targets[0])) / 2
        loss, loss_l = loss_g, _zero(loss_g)
        # lambda = 0 skips the term entirely, so loss and gradients equal plain BYOL bit for bit
        if self.co is not None and self.lam > 0:
            loss_l = self.co(fmaps, preds, targets, target_fmaps)
            loss = loss_g + self.lam * loss_l
        return MethodOutput(loss, loss_g.detach(), loss_l.detach(), hs[0].detach(), zs[0].detach())


class SimCLR(nn.Module):
    """SimCLR (and CO-SimCLR when ``co`` is given): encoder + projector, NT-Xent with the
    negatives gathered from all processes."""

    def __init__(self, encoder: Encoder, proj_hidden: int, proj_dim: int, temperature: float,
                 co: CoTerm | None = None, lam: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = MLP(encoder.num_features, proj_hidden, proj_dim)
        self.temperature = temperature
        self.co = co
        self.lam = lam

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return []

    def forward(self, v1: Tensor, v2: Tensor) -> MethodOutput:
        fmaps = [self.encoder(v1), self.encoder(v2)]
        hs = [global_pool(f) for f in fmaps]
        zs = [self.projector(h) for h in hs]
        gather, offset = dist_utils.gather_with_grad, dist_utils.rank() * v1.shape[0]
        loss_g = nt_xent_loss(zs[0], zs[1], gather(zs[0]), gather(zs[1]), self.temperature, offset)
        loss, loss_l = loss_g, _zero(loss_g)
        if self.co is not None and self.lam > 0:
            loss_l = self.co(fmaps, zs, zs, gather=gather, offset=offset)
            loss = loss_g + self.lam * loss_l
        return MethodOutput(loss, loss_g.detach(), loss_l.detach(), hs[0].detach(), zs[0].detach())


def build_encoder(cfg: Config) -> Encoder:
    from .backbones import build_backbone

    backbone = build_backbone(cfg.backbone.name, small_image=cfg.backbone.small_image, width=cfg.backbone.width)
    return Encoder(backbone, cfg.augment.mean, cfg.augment.std)


def build_method(cfg: Config, encoder: Encoder | None = None) -> BYOL | SimCLR:
    """The method named by ``cfg.method.name``; the CO term is created after the base parts."""
    encoder = encoder if encoder is not None else build_encoder(cfg)
    name, h = cfg.method.name, cfg.head
    if name in ("byol", "co_byol"):
        model: BYOL | SimCLR = BYOL(encoder, h.proj_hidden, h.proj_dim, h.pred_hidden)
        kind = "byol"
    elif name in ("simclr", "co_simclr"):
        model = SimCLR(encoder, h.proj_hidden, h.proj_dim, cfg.method.temperature)
        kind = "infonce"
    else:
        raise ValueError(f"method.name={name!r} is not one of byol, co_byol, simclr, co_simclr")
    if name.startswith("co_"):
        model.co = CoTerm(encoder.num_features, h.proj_dim, cfg.co.proj_hidden, cfg.co.pred_hidden,
                          kind=kind, direction=cfg.co.direction, temperature=cfg.method.temperature)
        model.lam = cfg.co.lam
    return model
