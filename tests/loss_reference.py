"""Loop-by-loop references for the losses, written from the papers' definitions in numpy: what the
tests compare the vectorised torch code with (never the code under test itself)."""

from __future__ import annotations

import math

import numpy as np

#: the test configs' temperatures (config.py defaults)
SIMCLR_T, MOCO_T, DINO_STUDENT_T, DINO_TEACHER_T = 0.2, 1.0, 0.1, 0.04


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def infonce(q: np.ndarray, keys: np.ndarray, pos: int, temp: float) -> float:
    """-log softmax(cos(q, k) / T)[pos] over the keys (K, D)."""
    s = np.array([cos(q, k) / temp for k in keys])
    return float(-(s[pos] - math.log(np.exp(s).sum())))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def cross_entropy(t_probs: np.ndarray, s_logits: np.ndarray, temp: float) -> float:
    """- sum_k t_k log softmax(s / T)_k."""
    return float(-(t_probs * np.log(softmax(s_logits / temp))).sum())


def nt_xent(z1: np.ndarray, z2: np.ndarray, temp: float) -> float:
    """SimCLR's loss: each of the 2B embeddings against the other 2B - 1, its other view positive."""
    z = np.concatenate([z1, z2])
    b = len(z1)
    losses = []
    for i in range(2 * b):
        others = [j for j in range(2 * b) if j != i]
        pos = others.index((i + b) % (2 * b))
        losses.append(infonce(z[i], z[others], pos, temp))
    return float(np.mean(losses))


def pair_term(base: str, query: np.ndarray, target: np.ndarray, keys: np.ndarray, i: int,
              center: np.ndarray | float = 0.0) -> float:
    """One query (D,) against its image i's target (D,), among ``keys`` (B, D) for the contrastive ones."""
    if base == "byol":
        return 2 - 2 * cos(query, target)
    if base == "simclr":
        return infonce(query, keys, i, SIMCLR_T)
    if base == "mocov3":
        return 2 * MOCO_T * infonce(query, keys, i, MOCO_T)
    return cross_entropy(softmax((target - center) / DINO_TEACHER_T), query, DINO_STUDENT_T)


#: base -> the factor on the mean over view pairs (BYOL and MoCo-v3 sum the two view orders)
PAIR_SCALE = {"byol": 2.0, "simclr": 1.0, "mocov3": 2.0, "dino": 1.0}


def co_terms(base: str, q: list[np.ndarray], t: list[np.ndarray], lq: list[np.ndarray] | None,
             lt: list[np.ndarray] | None, centers: tuple[np.ndarray | float, np.ndarray | float] = (0.0, 0.0),
             ) -> tuple[float | None, float | None]:
    """(local-to-global, global-to-local) terms of two views, each the mean over the two view pairs
    and over (image, position): q, t (B, D) per view; lq, lt (B, P, D) per view (None: not computed).
    DINO's teacher outputs are centred with ``centers`` (global, local)."""
    pairs = [(1, 0), (0, 1)]
    l2g = g2l = None
    if lq is not None:
        b, p = lq[0].shape[:2]
        l2g = float(np.mean([np.mean([pair_term(base, lq[a][i, j], t[c][i], t[c], i, centers[0])
                                      for i in range(b) for j in range(p)]) for a, c in pairs]))
    if lt is not None:
        b, p = lt[0].shape[:2]
        l2g_keys = [[lt[c][:, j] for j in range(p)] for c in range(2)]
        g2l = float(np.mean([np.mean([pair_term(base, q[a][i], lt[c][i, j], l2g_keys[c][j], i, centers[1])
                                      for i in range(b) for j in range(p)]) for a, c in pairs]))
    return l2g, g2l


def global_loss(base: str, q: list[np.ndarray], t: list[np.ndarray], center: np.ndarray | float = 0.0) -> float:
    """L_g of two views."""
    if base == "simclr":
        return nt_xent(q[0], q[1], SIMCLR_T)
    b = len(q[0])
    return PAIR_SCALE[base] * float(np.mean([np.mean([pair_term(base, q[a][i], t[c][i], t[c], i, center)
                                                      for i in range(b)]) for a, c in ((1, 0), (0, 1))]))
