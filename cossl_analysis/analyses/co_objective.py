"""Does the CO term meet its own objective? Each position's local prediction against the global
target of the other view, on held-out images (docs/analysis.md, "The CO objective").

A CO model is read through its local heads; a base model (or one with shared heads) through its
global heads applied at every position, which were never trained for it: the floor a CO model's
local heads must clear. The global query against the same targets is the base objective, beside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cossl_train.evaluate import eval_mode
from cossl_train.heads import per_position
from cossl_train.methods import SSLMethod

_UNTRAINED = "global heads at every position (never trained for it)"
QueryPath = Literal["auto", "global"]


@dataclass
class ObjectiveResult:
    """Cosines and retrieval of local queries (N images x P positions) against N global targets."""

    path: str  #: "local heads" or "global heads at every position"
    own_cosine: float  #: mean cos(local query of image i at p, target of image i)
    other_cosine: float  #: mean cos(local query of image i at p, target of image j), j != i
    retrieval: float  #: fraction of local queries whose most similar target is their own image's
    chance: float  #: 1 / N
    own_cosine_map: np.ndarray  #: (h, w) own cosine per position
    retrieval_map: np.ndarray  #: (h, w) retrieval per position
    global_own_cosine: float  #: the global query against the same targets (the base objective)
    global_retrieval: float
    num_images: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectiveResult:
        return cls(**{k: (np.asarray(d[k]) if k.endswith("_map") else d[k]) for k in cls.__dataclass_fields__})


def _chain(*heads: nn.Module | None) -> Callable[[Tensor], Tensor]:
    mods = [h for h in heads if h is not None]
    return nn.Sequential(*mods) if mods else nn.Identity()


def local_query_path(method: SSLMethod, path: QueryPath = "auto") -> tuple[str, Callable[[Tensor], Tensor]]:
    """(name, map (B, C, h, w) -> (B, P, D)): the CO term's local queries (its local heads, or the
    shared global heads it trains at every position), else (or with ``path="global"``) the global
    path at every position."""
    co = method.co
    if path not in ("auto", "global"):
        raise ValueError(f"unknown path {path!r}; valid: auto, global")
    if co is not None and co.l2g and method.local_weight > 0 and path == "auto":
        name = "shared heads (global heads at every position)" if co.shared else "local heads"
        return name, lambda f: co.local_queries(method, co._grid(f))
    head = _chain(method.encoder.head, method.projector, method.predictor)
    return _UNTRAINED, lambda f: per_position(head, f)


def global_queries(method: SSLMethod, fmap: Tensor) -> Tensor:
    """(B, D): the online global query q(g(h)) (g(h) without a predictor)."""
    return _chain(method.projector, method.predictor)(method.encoder.pool(fmap))


def global_targets(method: SSLMethod, images: Tensor) -> Tensor:
    """(B, D) raw global targets: the momentum projection, or SimCLR's online projection."""
    if method.momentum:
        return method.target_projector(method.target_encoder.pool(method.target_encoder(images)))
    return method.projector(method.encoder.pool(method.encoder(images)))


@torch.no_grad()
def co_objective(method: SSLMethod, view_a: Tensor, view_b: Tensor, batch_size: int = 256,
                 path: QueryPath = "auto") -> ObjectiveResult:
    """Local queries of ``view_a`` (N, 3, H, W) in [0, 1] against the global targets of ``view_b``
    (the same N images, another view), in eval mode; see :class:`ObjectiveResult`. ``path="global"``
    reads even a CO model through its global heads at every position (the floor of its local heads)."""
    with eval_mode(method):
        name, local_q = local_query_path(method, path)
        queries, glob, targets, hw = [], [], [], None
        for s in range(0, len(view_a), batch_size):
            f = method.encoder(view_a[s:s + batch_size].float())
            queries.append(local_q(f).float())
            grid = method.co.grid if name != _UNTRAINED and method.co is not None else 0
            hw = (grid, grid) if grid else tuple(f.shape[-2:])
            glob.append(global_queries(method, f).float())
            targets.append(global_targets(method, view_b[s:s + batch_size].float()).float())
    q = F.normalize(torch.cat(queries), dim=-1)  # (N, P, D)
    g = F.normalize(torch.cat(glob), dim=-1)  # (N, D)
    t = F.normalize(torch.cat(targets), dim=-1)  # (N, D)
    n, p = q.shape[:2]
    sims = torch.einsum("npd,md->npm", q, t)  # (N, P, N)
    own = sims[torch.arange(n), :, torch.arange(n)]  # (N, P)
    other = (sims.sum(-1) - own) / max(n - 1, 1)
    hit = (sims.argmax(-1) == torch.arange(n).unsqueeze(1)).double()
    gsims = g @ t.T
    return ObjectiveResult(
        path=name, own_cosine=float(own.mean()), other_cosine=float(other.mean()), retrieval=float(hit.mean()),
        chance=1.0 / n, own_cosine_map=own.mean(0).reshape(*hw).double().numpy(),
        retrieval_map=hit.mean(0).reshape(*hw).numpy(), global_own_cosine=float(gsims.diagonal().mean()),
        global_retrieval=float((gsims.argmax(-1) == torch.arange(n)).double().mean()), num_images=n)


@torch.no_grad()
def head_space_features(method: SSLMethod, images: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """(global queries (N, D), local queries (N, P, D)): the representations the CO objective
    compares, for Pearson C in the heads' space (``similarity_from_features``)."""
    with eval_mode(method):
        _, local_q = local_query_path(method)
        glob, loc = [], []
        for s in range(0, len(images), batch_size):
            f = method.encoder(images[s:s + batch_size].float())
            glob.append(global_queries(method, f).float())
            loc.append(local_q(f).float())
    return torch.cat(glob), torch.cat(loc)


def head_space_pool_head(method: SSLMethod) -> nn.Module:
    """What follows the spatial mean in the heads' space (pool MLP, projector, predictor): patch
    dropping re-pooled through it (``patch_drop_from_features(..., head=...)``)."""
    return _chain(method.encoder.head, method.projector, method.predictor)
