"""Does the CO term meet its own objective? Each position's local query against the global target of
the other view, on held-out images (docs/analysis.md, "The CO objective").

The diagnostic reads a model as :class:`CoParts` -- an encoder, its global head, its global targets
and, for a CO model, its local heads -- so it works on a trainer checkpoint
(``CoParts.from_method(load_method(path))``) and on a model trained in one's own loop alike. A CO
model is read through its local heads; a base model (or one with shared heads) through its global
heads applied at every position, which were never trained for it: the floor a CO model's local heads
must clear. The global query against the same targets is the base objective, beside.

BatchNorm. Heads trained on local rows (separate local heads) are read in eval mode with their
running statistics. Global heads applied to local rows (the floor, shared heads) are read as
training applies them: normalised with the statistics of the local rows themselves, never with the
running statistics of the global rows; here over the local rows of all evaluated images at once,
so the result does not depend on the batch size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cossl_analysis.errors import AnalysisError
from cossl_train.encoder import global_pool
from cossl_train.evaluate import eval_mode
from cossl_train.heads import per_position
from cossl_train.methods import SSLMethod

_UNTRAINED = "global heads at every position (never trained for it)"
QueryPath = Literal["auto", "global"]


@dataclass
class CoParts:
    """A model as the CO-objective diagnostic reads it: modules on tensors, from any training loop.

    Attributes:
        encoder: images (B, 3, H, W) in [0, 1] -> feature map (B, C, h, w) (normalisation inside).
        global_head: (N, C) spatial means of maps -> (N, D) global queries (pool MLP, projector and
            predictor, whichever the model has). Applied at every position, it gives the floor.
        pool: the map of the latest ``encoder`` call -> (B, C') global representation that
            ``global_query`` reads, when it is not the spatial mean (a ViT's class token); None: the
            global query is ``global_head(spatial mean)``.
        global_query: (B, C') -> (B, D), used with ``pool`` (default: ``global_head``).
        target: images -> (N, D) global targets (the momentum branch's projection; for a method
            without one, such as SimCLR, the online projection).
        local_head: (B, C, h, w) map -> (B, P, D) local queries (e.g. a
            :class:`~cossl_train.heads.PerPosition` local projector and predictor), or None: the model
            is then read through its global heads at every position.
        local_path: the local queries in words, for reports.
        modules: what is put in eval mode while the diagnostic runs (default: those of the fields
            above that are modules; name them when ``encoder`` or ``target`` is a function).

    >>> import torch
    >>> from torch import nn
    >>> from cossl_train import MLP, PerPosition
    >>> encoder = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU())      # a feature-map encoder
    >>> projector = MLP(16, 32, 8)
    >>> parts = CoParts(encoder, global_head=projector,
    ...                 target=lambda x: projector(encoder(x).mean((2, 3))),    # SimCLR: online targets
    ...                 local_head=PerPosition(MLP(16, 32, 8)))
    >>> view_a, view_b = torch.rand(6, 3, 9, 9), torch.rand(6, 3, 9, 9)
    >>> result = co_objective(parts, view_a, view_b)
    >>> result.path, result.num_images, result.own_cosine_map.shape
    ('local heads', 6, (4, 4))
    """

    encoder: Callable[[Tensor], Tensor]
    global_head: nn.Module
    target: Callable[[Tensor], Tensor]
    local_head: Callable[[Tensor], Tensor] | None = None
    local_path: str = "local heads"
    modules: Sequence[nn.Module] = field(default=())
    pool: Callable[[Tensor], Tensor] | None = None
    global_query: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.global_head, nn.Module):
            raise AnalysisError(f"CoParts.global_head must be an nn.Module (its BatchNorm is read at every position), "
                                f"got {type(self.global_head).__name__}")
        for name in ("encoder", "target", "local_head"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise AnalysisError(f"CoParts.{name} must be a module or a function of tensors, got "
                                    f"{type(value).__name__}")
        if not self.modules:
            self.modules = tuple(m for m in (self.encoder, self.global_head, self.target, self.local_head)
                                 if isinstance(m, nn.Module))

    @classmethod
    def from_method(cls, method: SSLMethod, path: QueryPath = "auto") -> CoParts:
        """The parts of a trainer method (``cossl_train.load_method(checkpoint)``): its CO term's
        local queries (its local heads, or the shared global heads it trains at every position), else
        (or with ``path="global"``) none, so the global path at every position is read."""
        if path not in ("auto", "global"):
            raise AnalysisError(f"unknown path {path!r}; valid: auto, global")
        co = method.co
        local, name = None, "local heads"
        if co is not None and co.l2g and method.local_weight > 0 and path == "auto":
            name = "shared heads (global heads at every position)" if co.shared else "local heads"

            def local(f: Tensor) -> Tensor:
                return co.local_queries(method, f)

        enc = method.encoder
        heads = _chain(method.projector, method.predictor)
        pool, query = (None, None) if enc.poolable_subsets else (enc.pool, heads)  # a class token: read by pool
        return cls(enc, _chain(enc.mean_head, method.projector, method.predictor), lambda x: global_targets(method, x),
                   local, name, modules=(method,), pool=pool, global_query=query)


def _chain(*heads: nn.Module | None) -> nn.Module:
    mods = [h for h in heads if h is not None]
    return nn.Sequential(*mods) if mods else nn.Identity()


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


def _parts(model: SSLMethod | CoParts, path: QueryPath = "auto") -> CoParts:
    if isinstance(model, CoParts):
        if path == "global":
            return dataclasses.replace(model, local_head=None)
        return model
    if isinstance(model, SSLMethod):
        return CoParts.from_method(model, path)
    raise AnalysisError(f"the CO objective reads a cossl method (cossl_train.load_method) or CoParts, got "
                        f"{type(model).__name__}")


def global_targets(method: SSLMethod, images: Tensor) -> Tensor:
    """(B, D) raw global targets: the momentum projection, or SimCLR's online projection."""
    if method.momentum:
        return method.target_projector(method.target_encoder.pool(method.target_encoder(images)))
    return method.projector(method.encoder.pool(method.encoder(images)))


def _encode(parts: CoParts, images: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """(maps (N, C, h, w), global queries (N, D)), in batches of ``batch_size`` images."""
    fmaps, glob = [], []
    for s in range(0, len(images), batch_size):
        f = parts.encoder(images[s:s + batch_size].float())
        fmaps.append(f)
        if parts.pool is None:
            glob.append(parts.global_head(global_pool(f)))
        else:  # read right after the pass that made ``f`` (a class token belongs to its pass)
            glob.append((parts.global_query or parts.global_head)(parts.pool(f)))
    return torch.cat(fmaps), torch.cat(glob)


def _local_queries(parts: CoParts, fmaps: Tensor) -> tuple[str, Tensor]:
    """(path, local queries (N, P, D)) of the maps of all images at once."""
    if parts.local_head is not None:
        return parts.local_path, parts.local_head(fmaps)
    # the global heads' running statistics belong to global rows: local rows use their own
    return _UNTRAINED, per_position(parts.global_head, fmaps, update_running_stats=False)


def _map_shape(p: int, fmap: Tensor) -> tuple[int, int]:
    h, w = fmap.shape[-2:]
    if p == h * w:
        return int(h), int(w)
    side = int(round(p ** 0.5))
    if side * side != p:
        raise AnalysisError(f"the local queries have {p} positions per image, which is neither the map's {h}x{w} "
                            "nor a square grid")
    return side, side


def _check_views(view_a: Tensor, view_b: Tensor) -> None:
    if view_a.dim() != 4 or view_a.shape[:2] != view_b.shape[:2] or view_a.shape[1] != 3:
        raise AnalysisError(f"the two views must be (N, 3, H, W) batches of the same N images, got "
                            f"{tuple(view_a.shape)} and {tuple(view_b.shape)}")
    if len(view_a) < 2:
        raise AnalysisError(f"the CO objective needs at least 2 images (retrieval among them), got {len(view_a)}")


@torch.no_grad()
def co_objective(model: SSLMethod | CoParts, view_a: Tensor, view_b: Tensor, batch_size: int = 256,
                 path: QueryPath = "auto") -> ObjectiveResult:
    """Local queries of ``view_a`` (N, 3, H, W) in [0, 1] against the global targets of ``view_b``
    (the same N images, another view), in eval mode; see :class:`ObjectiveResult`.

    ``model`` is a cossl method (``cossl_train.load_method``) or :class:`CoParts` from any loop.
    ``path="global"`` reads even a CO model through its global heads at every position (the floor
    of its local heads). The encoder and targets run in batches of ``batch_size`` images.
    """
    _check_views(view_a, view_b)
    parts = _parts(model, path)
    with eval_mode(*parts.modules):
        fmaps, glob = _encode(parts, view_a, batch_size)
        name, local = _local_queries(parts, fmaps)
        targets = torch.cat([parts.target(view_b[s:s + batch_size].float())
                             for s in range(0, len(view_b), batch_size)])
    hw = _map_shape(local.shape[1], fmaps)
    q = F.normalize(local.float(), dim=-1)  # (N, P, D)
    g = F.normalize(glob.float(), dim=-1)  # (N, D)
    t = F.normalize(targets.float(), dim=-1)  # (N, D)
    n = q.shape[0]
    sims = torch.einsum("npd,md->npm", q, t)  # (N, P, N)
    idx = torch.arange(n, device=sims.device)
    own = sims[idx, :, idx]  # (N, P)
    other = (sims.sum(-1) - own) / max(n - 1, 1)
    hit = (sims.argmax(-1) == torch.arange(n, device=sims.device).unsqueeze(1)).double()
    gsims = g @ t.T
    return ObjectiveResult(
        path=name, own_cosine=float(own.mean()), other_cosine=float(other.mean()), retrieval=float(hit.mean()),
        chance=1.0 / n, own_cosine_map=own.mean(0).reshape(*hw).double().cpu().numpy(),
        retrieval_map=hit.mean(0).reshape(*hw).cpu().numpy(), global_own_cosine=float(gsims.diagonal().mean()),
        global_retrieval=float((gsims.argmax(-1) == torch.arange(n, device=gsims.device)).double().mean()),
        num_images=n)


@torch.no_grad()
def head_space_features(model: SSLMethod | CoParts, images: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """(global queries (N, D), local queries (N, P, D)): the representations the CO objective
    compares, for Pearson C in the heads' space (``similarity_from_features``)."""
    parts = _parts(model)
    with eval_mode(*parts.modules):
        fmaps, glob = _encode(parts, images, batch_size)
        _, local = _local_queries(parts, fmaps)
    return glob.float(), local.float()


def head_space_pool_head(model: SSLMethod | CoParts) -> nn.Module:
    """What follows the spatial mean in the heads' space (pool MLP, projector, predictor): patch
    dropping re-pooled through it (``patch_drop_from_features(..., head=...)``)."""
    return _parts(model).global_head
