"""Offline evaluation of a frozen encoder: linear probe (top-1/top-5) and weighted kNN.

Features are encoded once; the linear head then trains on the stored features, which is what
makes the probe cheap enough to run on every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .config import AugmentConfig, Config, DataConfig
from .encoder import pool_features


@torch.no_grad()
def extract_features(encoder: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu",
                     num_workers: int = 0, progress: bool = True, desc: str = "encode") -> tuple[Tensor, Tensor]:
    """Global representations (N, C) float32 and labels (N,) of a dataset of (uint8 image, label)."""
    from .data import collate_skip_none

    was_training = encoder.training
    encoder.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=partial(collate_skip_none, n_fields=2))
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        x, y = batch[0], batch[1]
        if y.numel() == 0:  # the whole batch was unreadable (and counted by the loader)
            continue
        x = x.to(device, non_blocking=True).float() / 255 if x.dtype == torch.uint8 else x.to(device)
        feats.append(pool_features(encoder, encoder(x)).float().cpu())
        labels.append(y)
    encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@dataclass
class ProbeResult:
    top1: float
    top5: float
    probe: nn.Linear  #: acts on raw (unstandardised) features: standardisation is folded in


def _topk(logits: Tensor, labels: Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hit = logits.topk(k, dim=1).indices.eq(labels[:, None]).any(dim=1)
    return hit.float().mean().item() * 100


def linear_probe(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, epochs: int = 100,
                 lr: float = 0.1, batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0,
                 progress: bool = True) -> ProbeResult:
    """Train a linear classifier on frozen features (SGD, momentum 0.9, cosine lr) and report
    top-1/top-5 (%) on the validation features. Features are standardised with the training
    mean/std; the returned probe has that folded into its weights."""
    g = torch.Generator().manual_seed(seed)
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs, xv = (train_x - mean) / std, (val_x - mean) / std
    head = nn.Linear(train_x.shape[1], num_classes)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    n = len(xs)
    for _ in tqdm(range(epochs), desc="linear probe", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(head(xs[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        logits = head(xv)
        folded = nn.Linear(train_x.shape[1], num_classes)
        folded.weight.copy_(head.weight / std)
        folded.bias.copy_(head.bias - (head.weight * (mean / std)).sum(1))
    return ProbeResult(_topk(logits, val_y, 1), _topk(logits, val_y, 5), folded)


@torch.no_grad()
def knn_classify(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, k: int = 20,
                 temperature: float = 0.07, chunk: int = 1024) -> float:
    """Weighted kNN top-1 (%): cosine similarity on L2-normalised features, the k nearest
    training samples vote with weight exp(sim / temperature) (Wu et al. 2018)."""
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    k = min(k, len(train_x))
    tx = F.normalize(train_x, dim=1)
    correct = 0
    for i in range(0, len(val_x), chunk):
        q = F.normalize(val_x[i:i + chunk], dim=1)
        sims, idx = (q @ tx.t()).topk(k, dim=1)
        weights = (sims / temperature).exp()
        votes = torch.zeros(len(q), num_classes).scatter_add_(1, train_y[idx], weights)
        correct += (votes.argmax(1) == val_y[i:i + chunk]).sum().item()
    return correct / len(val_x) * 100


def eval_splits(data_cfg: DataConfig, aug_cfg: AugmentConfig, seed: int = 0,
                holdout: float = 0.1) -> tuple[Dataset, Dataset]:
    """(train, val) labelled datasets for evaluation; a folder without a validation split gets
    a deterministic ``holdout`` fraction of its training images held out (and says so)."""
    import logging

    from torch.utils.data import Subset

    from .data import build_eval_datasets

    train, val = build_eval_datasets(data_cfg, aug_cfg)
    if val is None:
        n = len(train)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        cut = max(1, int(n * holdout))
        logging.getLogger("cossl_train").info(
            "no validation split: holding out %d of %d training images for evaluation", cut, n)
        train, val = Subset(train, perm[cut:]), Subset(train, perm[:cut])
    return train, val


def evaluate_encoder(encoder: nn.Module, cfg: Config, device: str | torch.device = "cpu", linear: bool = True,
                     knn: bool = True, progress: bool = True) -> dict:
    """Offline linear probe (top-1/top-5) and weighted kNN (top-1) of a frozen encoder, in %."""
    train, val = eval_splits(cfg.data, cfg.augment, seed=cfg.train.seed)
    bs = cfg.eval.linear_batch_size
    tx, ty = extract_features(encoder, train, bs, device, progress=progress, desc="encode train")
    vx, vy = extract_features(encoder, val, bs, device, progress=progress, desc="encode val")
    if (ty < 0).any() or (vy < 0).any():
        raise ValueError(f"evaluation needs labels, but data.root={cfg.data.root!r} has unlabelled images")
    out: dict = {"n_train": len(tx), "n_val": len(vx)}
    if linear:
        res = linear_probe(tx, ty, vx, vy, epochs=cfg.eval.linear_epochs, lr=cfg.eval.linear_lr,
                           batch_size=cfg.eval.linear_batch_size, weight_decay=cfg.eval.linear_weight_decay,
                           seed=cfg.train.seed, progress=progress)
        out.update(linear_top1=res.top1, linear_top5=res.top5, probe=res.probe)
    if knn:
        out["knn_top1"] = knn_classify(tx, ty, vx, vy, k=cfg.eval.knn_k, temperature=cfg.eval.knn_temperature)
    return out
