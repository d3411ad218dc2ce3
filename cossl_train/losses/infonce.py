"""InfoNCE losses: SimCLR's NT-Xent, MoCo-v3's InfoNCE and the CO term's local/global forms.

Shapes: B queries on this process, P local positions, D embedding size, Bg = keys gathered from all
processes (Bg = B in one process). ``offset`` is the row of this process's first image among the
gathered keys, so the positive of query b is key ``offset + b``. All are cross-entropy on logits
(never exp-then-log).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def infonce_loss(q: Tensor, k: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """MoCo-v3's contrastive loss: mean over the B queries of cross-entropy(q_b . k / T, offset + b).

    q: (B, D) queries; k: (Bg, D) keys of all processes (the caller detaches momentum keys).
    Both are L2-normalised here. MoCo-v3 multiplies this by 2T; the method does that.
    """
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    logits = q @ k.t() / temperature  # (B, Bg)
    target = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, target)


def nt_xent_loss(z1: Tensor, z2: Tensor, k1: Tensor, k2: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """SimCLR's NT-Xent, computed as cross-entropy on logits.

    z1, z2: (B, D) this process's embeddings of views 1 and 2 (the queries).
    k1, k2: (Bg, D) the same embeddings from all processes (k1[offset:offset+B] is z1).
    Each query's positive is the other view of its image; its negatives are the other 2*Bg - 2
    embeddings; itself is masked out. Returns the mean over the 2B queries.
    """
    b, bg = z1.shape[0], k1.shape[0]
    q = F.normalize(torch.cat([z1, z2]), dim=-1)
    k = F.normalize(torch.cat([k1, k2]), dim=-1)
    logits = q @ k.t() / temperature  # (2B, 2Bg)
    idx = torch.arange(b, device=z1.device) + offset
    self_idx = torch.cat([idx, idx + bg])
    pos_idx = torch.cat([idx + bg, idx])
    rows = torch.arange(2 * b, device=z1.device)
    # a query is never its own negative
    logits = logits.index_put((rows, self_idx), torch.tensor(float("-inf"), device=logits.device, dtype=logits.dtype))
    return F.cross_entropy(logits, pos_idx)


def local_to_global_infonce(q_local: Tensor, k_global: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """Every local embedding queries the global embeddings of the other view.

    q_local: (B, P, D) local embeddings of one view; k_global: (Bg, D) global embeddings of the
    other view from all processes. Query (b, p) has positive k_global[offset + b]; the other
    rows of k_global are its negatives. Returns the mean cross-entropy over the B*P queries.
    """
    b, p, d = q_local.shape
    q = F.normalize(q_local.reshape(b * p, d), dim=-1)
    k = F.normalize(k_global, dim=-1)
    logits = q @ k.t() / temperature  # (B*P, Bg)
    target = (torch.arange(b, device=q.device) + offset).repeat_interleave(p)
    return F.cross_entropy(logits, target)


def global_to_local_infonce(q_global: Tensor, k_local: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """The reverse direction: each global embedding queries, position by position, the local
    embeddings of the other view.

    q_global: (B, D); k_local: (Bg, P, D). For every position p, query b has positive
    k_local[offset + b, p] and negatives k_local[j, p], j != offset + b. Mean over B*P terms.
    """
    b = q_global.shape[0]
    p = k_local.shape[1]
    q = F.normalize(q_global, dim=-1)
    k = F.normalize(k_local, dim=-1)
    logits = torch.einsum("bd,jpd->pbj", q, k) / temperature  # (P, B, Bg)
    target = (torch.arange(b, device=q.device) + offset).repeat(p)
    return F.cross_entropy(logits.reshape(p * b, -1), target)
