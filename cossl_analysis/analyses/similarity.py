"""Global against local similarity (the paper's Figure 3B): over all image pairs, the cosine of
their global representations against that of their local ones, and the Pearson C of the two
(docs/analysis.md: the three local modes, the intra-image similarity). Arithmetic in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cossl_analysis.analyses._common import Data
from cossl_analysis.analyses.features import representations

__all__ = ["SimilarityResult", "pearson", "pearson_note", "similarity_analysis", "similarity_from_features"]

SimilarityMode = Literal["random", "same", "all"]
_PAIR_CHUNK = 65536


@dataclass
class SimilarityResult:
    """Output of the local/global similarity analysis (N image pairs, B images).

    Attributes:
        pairs: (N, 2) int64 image indices (i, j), i < j.
        global_sim: (N,) cos(h_i, h_j).
        local_sim: (N,) local similarity of the pair (definition depends on ``mode``).
        local_positions: (N, 2) flat positions (p in image i, q in image j) drawn in ``"random"``
            mode, None otherwise.
        pearson_c: Pearson correlation between ``global_sim`` and ``local_sim``; NaN where it is
            undefined, and ``note`` says why (JSON files hold null and the note).
        intra_local_sim: (B,) mean cosine between distinct local representations of each image.
        intra_local_mean: mean of ``intra_local_sim``.
        mode: the local-similarity definition.
        num_images: B.
        num_positions: P = h * w.
        note: why ``pearson_c`` is undefined ("" when it is defined).
    """

    pairs: np.ndarray
    global_sim: np.ndarray
    local_sim: np.ndarray
    local_positions: np.ndarray | None
    pearson_c: float
    intra_local_sim: np.ndarray
    intra_local_mean: float
    mode: str
    num_images: int
    num_positions: int
    note: str = ""

    def summary(self) -> dict[str, Any]:
        """Scalar numbers only (for JSON reports)."""
        return {
            "pearson_c": self.pearson_c,
            "intra_local_mean": self.intra_local_mean,
            "global_sim_mean": float(self.global_sim.mean()) if len(self.global_sim) else float("nan"),
            "local_sim_mean": float(self.local_sim.mean()) if len(self.local_sim) else float("nan"),
            "num_pairs": len(self.pairs),
            "num_images": self.num_images,
            "num_positions": self.num_positions,
            "mode": self.mode,
            **({"pearson_c_note": self.note} if self.note else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        """All fields, arrays included (as numpy arrays)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SimilarityResult:
        """Rebuild a result from ``to_dict()`` (arrays as numpy arrays or lists, scalars as numbers)."""
        positions = d.get("local_positions")
        return cls(**{k: np.asarray(d[k]) for k in ("pairs", "global_sim", "local_sim", "intra_local_sim")},
                   local_positions=None if positions is None or np.size(positions) == 0 else np.asarray(positions),
                   pearson_c=_number(d["pearson_c"]), intra_local_mean=_number(d["intra_local_mean"]),
                   mode=str(d["mode"]), num_images=int(d["num_images"]), num_positions=int(d["num_positions"]),
                   note=str(d.get("note", "")))


def _number(value: Any) -> float:
    """A stored number; null (an undefined value in a JSON file) is NaN."""
    return math.nan if value is None else float(value)


def pearson_note(x: np.ndarray, y: np.ndarray) -> str:
    """Why the Pearson correlation of ``x`` and ``y`` is undefined, or "" when it is defined."""
    if len(x) < 2:
        return f"Pearson C needs at least 2 image pairs (3 images); there {'is' if len(x) == 1 else 'are'} {len(x)}"
    for name, v in (("global", x), ("local", y)):
        if not np.ptp(np.asarray(v, dtype=np.float64)) > 0:
            return f"the {name} similarities of all {len(v)} pairs are equal (a constant map?), so C is undefined"
    return ""


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two 1-D samples in float64; NaN when either is constant or n < 2."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def similarity_from_features(
    global_reps: Tensor,
    local_reps: Tensor,
    mode: SimilarityMode = "random",
    seed: int = 0,
    max_pairs: int | None = None,
) -> SimilarityResult:
    """Local/global similarity statistics from precomputed representations.

    Args:
        global_reps: (B, C) global representations h_i.
        local_reps: (B, P, C) local representations l_{i,p}.
        mode: local-similarity definition (docs/analysis.md).
        seed: seeds the position draws (``"random"``) and the pair subsampling.
        max_pairs: keep at most this many of the B(B-1)/2 pairs, drawn uniformly without replacement.

    Returns:
        A ``SimilarityResult``.
    """
    if global_reps.dim() != 2 or local_reps.dim() != 3 or len(global_reps) != len(local_reps):
        raise ValueError(
            f"expected global (B, C) and local (B, P, C), got {tuple(global_reps.shape)} "
            f"and {tuple(local_reps.shape)}"
        )
    if mode not in ("random", "same", "all"):
        raise ValueError(f"unknown mode {mode!r}")
    n_img, n_pos, _ = local_reps.shape
    if n_pos < 2:
        # the one position is the whole map: C compares a representation with (a head of) itself
        warnings.warn(f"the feature map has {n_pos} position(s): its local representation is the global one, so C "
                      "is not a measure of local against global similarity and the intra-image similarity is NaN; "
                      "use larger images (at least 2x2 positions)", RuntimeWarning, stacklevel=2)
    gen = torch.Generator().manual_seed(seed)

    g = F.normalize(global_reps.detach().cpu().double(), dim=-1, eps=1e-12)
    n = F.normalize(local_reps.detach().cpu().double(), dim=-1, eps=1e-12)

    pairs = torch.triu_indices(n_img, n_img, offset=1).T  # (N, 2), row-major order of (i, j)
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = torch.randperm(len(pairs), generator=gen)[:max_pairs].sort().values
        pairs = pairs[keep]
    pi, pj = pairs[:, 0], pairs[:, 1]
    global_sim = (g[pi] * g[pj]).sum(-1)

    local_positions = None
    if mode == "random":
        pos = torch.randint(n_pos, (len(pairs), 2), generator=gen)
        local_positions = pos.numpy()
        # Chunked over pairs: gathering N x C vectors at once can be gigabytes.
        local_sim = torch.zeros(len(pairs), dtype=torch.float64)
        for s in range(0, len(pairs), _PAIR_CHUNK):
            sl = slice(s, s + _PAIR_CHUNK)
            local_sim[sl] = (n[pi[sl], pos[sl, 0]] * n[pj[sl], pos[sl, 1]]).sum(-1)
    elif mode == "same":
        # mean_p <n_ip, n_jp> = <vec(n_i), vec(n_j)> / P: one (B, P*C) Gram matrix.
        flat = n.reshape(n_img, -1)
        local_sim = (flat @ flat.T)[pi, pj] / n_pos
    else:
        # mean_{p,q} <n_ip, n_jq> = <mean_p n_ip, mean_q n_jq>.
        m = n.mean(dim=1)
        local_sim = (m @ m.T)[pi, pj]

    # mean_{p != q} <n_p, n_q> = (|sum_p n_p|^2 - sum_p |n_p|^2) / (P (P - 1)).
    if n_pos >= 2:
        total = n.sum(dim=1)
        diag = (n * n).sum(dim=(1, 2))
        intra = ((total * total).sum(-1) - diag) / (n_pos * (n_pos - 1))
    else:
        intra = torch.full((n_img,), float("nan"), dtype=torch.float64)

    global_np, local_np = global_sim.numpy(), local_sim.numpy()
    return SimilarityResult(
        pairs=pairs.numpy().astype(np.int64),
        global_sim=global_np,
        local_sim=local_np,
        local_positions=local_positions,
        pearson_c=pearson(global_np, local_np),
        intra_local_sim=intra.numpy(),
        intra_local_mean=float(intra.mean()),
        mode=mode,
        num_images=n_img,
        num_positions=n_pos,
        note=pearson_note(global_np, local_np),
    )


def similarity_analysis(
    model: nn.Module,
    images: Data,
    mode: SimilarityMode = "random",
    seed: int = 0,
    max_pairs: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> SimilarityResult:
    """Figure 3B statistics for a model returning (B, C, h, w) feature maps.

    Args:
        model: images (B, 3, H, W) -> feature map (B, C, h, w); run in eval mode without gradients.
        images: (B, 3, H, W) tensor, or an iterable of image batches / (images, labels) batches.
        mode, seed, max_pairs: see ``similarity_from_features``.
        batch_size: images per forward pass when ``images`` is a tensor.
        progress: tqdm bar over batches.
    """
    glob, loc = representations(model, images, batch_size=batch_size, progress=progress)
    return similarity_from_features(glob, loc, mode=mode, seed=seed, max_pairs=max_pairs)
