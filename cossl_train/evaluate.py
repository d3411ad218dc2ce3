"""Offline evaluation of a frozen encoder: the fast and the standard linear probe and weighted kNN,
each number named by its protocol (docs/evaluation.md); and the pixel conversion and eval mode
that every evaluation and analysis uses."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as v2
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler, Subset
from tqdm.auto import tqdm

from .config import AugmentConfig, Config, DataConfig
from .encoder import pool_features

log = logging.getLogger("cossl_train")

PROTOCOLS = {
    "fast": "fast linear probe (frozen centre-crop features encoded once)",
    "standard": "standard linear probe (SGD on random-resized-crop + flip views, centre-crop evaluation)",
}


def _loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool = False,
            generator: torch.Generator | None = None) -> DataLoader:
    from .data import collate_skip_none
    from .data.loader import batched_loader

    if getattr(dataset, "batchable", False) and not shuffle:  # images in memory: whole batches, no workers
        return batched_loader(dataset, BatchSampler(SequentialSampler(dataset), batch_size, drop_last=False))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, generator=generator,
                      collate_fn=partial(collate_skip_none, n_fields=2))


def pixels(x: Tensor, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """A batch as float pixels in [0, 1] on ``device`` (what every encoder takes): uint8 / 255."""
    x = x.to(device, non_blocking=True)
    return x.to(dtype) / 255 if x.dtype == torch.uint8 else x.to(dtype)


@contextlib.contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode for the block, then each submodule's own flag back. In train mode a BatchNorm
    mixes the images of a batch (and updates its statistics), which no evaluation may do."""
    saved = [(sub, sub.training) for m in modules if m is not None for sub in m.modules()]
    for m in modules:
        if m is not None:
            m.eval()
    try:
        yield
    finally:
        for sub, flag in saved:
            sub.training = flag


@torch.no_grad()
def extract_features(encoder: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu",
                     num_workers: int = 0, progress: bool = True, desc: str = "encode") -> tuple[Tensor, Tensor]:
    """Global representations (N, C) float32 and labels (N,) of a dataset of (uint8 image, label),
    decoded by ``num_workers`` loader processes (unreadable images are dropped)."""
    feats, labels = [], []
    with eval_mode(encoder):
        for batch in tqdm(_loader(dataset, batch_size, num_workers), desc=desc, disable=not progress, leave=False):
            x, y = batch[0], batch[1]
            if y.numel() == 0:  # the whole batch was unreadable (and counted by the loader)
                continue
            feats.append(pool_features(encoder, encoder(pixels(x, device))).float().cpu())
            labels.append(y)
    if not feats:
        from .errors import DataError

        raise DataError(f"none of the {len(dataset)} images to encode ({desc}) could be read")  # type: ignore[arg-type]
    return torch.cat(feats), torch.cat(labels)


@dataclass
class ProbeResult:
    top1: float
    top5: float
    probe: nn.Linear  #: acts on raw (unstandardised) features: any standardisation is folded in
    protocol: str


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Percentage of rows whose label is among the k largest logits."""
    k = min(k, logits.shape[1])
    hit = logits.topk(k, dim=1).indices.eq(labels[:, None]).any(dim=1)
    return hit.float().mean().item() * 100


def _sgd(head: nn.Module, lr: float, momentum: float, weight_decay: float, epochs: int) -> tuple:
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)


def linear_probe(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, epochs: int = 100,
                 lr: float = 0.1, batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0,
                 progress: bool = True, momentum: float = 0.9) -> ProbeResult:
    """The fast protocol: a linear classifier on frozen features (SGD with momentum, cosine lr),
    top-1/top-5 (%) on the validation features. Features are standardised with the training
    mean/std; the returned probe has that folded into its weights."""
    g = torch.Generator().manual_seed(seed)
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs, xv = (train_x - mean) / std, (val_x - mean) / std
    with torch.random.fork_rng(devices=[]):  # the head's initial weights are the seed's too, not the caller's RNG's
        torch.manual_seed(seed)
        head = nn.Linear(train_x.shape[1], num_classes)
    opt, sched = _sgd(head, lr, momentum, weight_decay, epochs)
    n = len(xs)
    for _ in tqdm(range(epochs), desc="linear probe (fast)", disable=not progress, leave=False):
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
    return ProbeResult(topk_accuracy(logits, val_y, 1), topk_accuracy(logits, val_y, 5), folded, "fast")


def _with_transform(dataset: Dataset, transform: object) -> Dataset:
    """The same images (and subset) as ``dataset``, an ``EvalDataset`` or a Subset of one, seen
    through another transform."""
    from .data import EvalDataset

    if isinstance(dataset, Subset):
        return Subset(_with_transform(dataset.dataset, transform), dataset.indices)
    if not isinstance(dataset, EvalDataset):
        raise TypeError(f"the standard protocol needs an EvalDataset, got {type(dataset).__name__}")
    return EvalDataset(dataset.base, transform, dataset.indices)  # type: ignore[arg-type]


class TrainViewTransform:
    """The standard protocol's training views: RandomResizedCrop(R, scale) + horizontal flip,
    one image -> uint8 (3, R, R)."""

    def __init__(self, resolution: int, scale: tuple[float, float]) -> None:
        self.transform = v2.Compose([v2.RandomResizedCrop(resolution, scale=tuple(scale), antialias=True),
                                     v2.RandomHorizontalFlip()])

    def __call__(self, img: object) -> Tensor:
        from .augment import to_rgb_uint8

        return to_rgb_uint8(self.transform(img))


def linear_probe_standard(encoder: nn.Module, train: Dataset, val: Dataset, cfg: Config,
                          device: str | torch.device = "cpu", progress: bool = True) -> ProbeResult:
    """The standard protocol (docs/evaluation.md) with the ``eval.linear_*`` recipe."""
    e = cfg.eval
    vx, vy = extract_features(encoder, val, e.linear_batch_size, device, cfg.data.num_workers, progress, "encode val")
    views = _with_transform(train, TrainViewTransform(cfg.augment.resolution, e.linear_crop_scale))
    num_classes = int(vy.max()) + 1
    head: nn.Linear | None = None
    gen = torch.Generator().manual_seed(cfg.train.seed)
    opt = sched = None
    loader = partial(_loader, views, e.linear_batch_size, cfg.data.num_workers, shuffle=True, generator=gen)
    with eval_mode(encoder):  # frozen: BatchNorm statistics must not move
        for _ in tqdm(range(e.linear_epochs), desc="linear probe (standard)", disable=not progress, leave=False):
            for x, y, _skipped in loader():
                if y.numel() == 0:
                    continue
                with torch.no_grad():
                    f = pool_features(encoder, encoder(pixels(x, device))).float()
                if head is None:  # sized on the first batch: the class count of both splits
                    num_classes = max(num_classes, int(y.max()) + 1)
                    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, as the fast protocol
                        torch.manual_seed(cfg.train.seed)
                        head = nn.Linear(f.shape[1], num_classes).to(device)
                    opt, sched = _sgd(head, e.linear_lr, e.linear_momentum, e.linear_weight_decay, e.linear_epochs)
                loss = F.cross_entropy(head(f), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
    assert head is not None, "no readable training image"
    with torch.no_grad():
        logits = head(vx.to(device)).cpu()
    return ProbeResult(topk_accuracy(logits, vy, 1), topk_accuracy(logits, vy, 5), head.cpu(), "standard")


@torch.no_grad()
def knn_predict(train_x: Tensor, train_y: Tensor, val_x: Tensor, k: int = 20, temperature: float = 0.07,
                chunk: int = 1024) -> Tensor:
    """Weighted kNN predictions (N_val,): cosine similarity on L2-normalised features, the k
    nearest training samples vote with weight exp(sim / temperature) (Wu et al. 2018)."""
    num_classes = int(train_y.max()) + 1
    k = min(k, len(train_x))
    tx = F.normalize(train_x, dim=1)
    preds = []
    for i in range(0, len(val_x), chunk):
        q = F.normalize(val_x[i:i + chunk], dim=1)
        sims, idx = (q @ tx.t()).topk(k, dim=1)
        weights = (sims / temperature).exp()
        preds.append(torch.zeros(len(q), num_classes).scatter_add_(1, train_y[idx], weights).argmax(1))
    return torch.cat(preds)


def knn_classify(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, k: int = 20,
                 temperature: float = 0.07, chunk: int = 1024) -> float:
    """Weighted kNN top-1 (%) of :func:`knn_predict`."""
    return (knn_predict(train_x, train_y, val_x, k, temperature, chunk) == val_y).float().mean().item() * 100


def eval_splits(data_cfg: DataConfig, aug_cfg: AugmentConfig) -> tuple[Dataset, Dataset]:
    """(train, val) labelled datasets for evaluation. A folder without a validation split holds out
    about 10 % of its images by a hash of each file's path (``cossl_train.data.holdout``: the same images
    whatever the seed, and never trained on by any probe), and says so."""
    from .data import build_eval_datasets
    from .data.holdout import held_out_positions

    train, val = build_eval_datasets(data_cfg, aug_cfg)
    if val is None:
        held = held_out_positions(train.base, train.indices)
        kept = sorted(set(range(len(train))) - set(held))
        log.info("no validation split: holding out %d of %d training images for evaluation", len(held), len(train))
        train, val = Subset(train, kept), Subset(train, held)
    return train, val


def _labelled(ty: Tensor, vy: Tensor, cfg: Config) -> None:
    if (ty < 0).any() or (vy < 0).any():
        from .errors import DataError

        raise DataError(f"evaluation needs labels, but data.dataset={cfg.data.dataset} data.root={cfg.data.root!r} "
                        "has unlabelled images")


def evaluate_encoder(encoder: nn.Module, cfg: Config, device: str | torch.device = "cpu", linear: bool = True,
                     knn: bool = True, progress: bool = True) -> dict:
    """Offline linear probe (``eval.linear_protocol``; top-1/top-5) and weighted kNN (top-1) of a
    frozen encoder, in %. The result names the protocol (``linear_protocol``)."""
    train, val = eval_splits(cfg.data, cfg.augment)
    bs, workers = cfg.eval.linear_batch_size, cfg.data.num_workers
    tx, ty = extract_features(encoder, train, bs, device, workers, progress, "encode train")
    vx, vy = extract_features(encoder, val, bs, device, workers, progress, "encode val")
    _labelled(ty, vy, cfg)
    out: dict = {"n_train": len(tx), "n_val": len(vx)}
    if linear:
        e = cfg.eval
        if e.linear_protocol == "standard":
            res = linear_probe_standard(encoder, train, val, cfg, device, progress)
        else:
            res = linear_probe(tx, ty, vx, vy, epochs=e.linear_epochs, lr=e.linear_lr, batch_size=bs,
                               weight_decay=e.linear_weight_decay, seed=cfg.train.seed, progress=progress,
                               momentum=e.linear_momentum)
        out.update(linear_protocol=res.protocol, linear_top1=res.top1, linear_top5=res.top5, probe=res.probe)
    if knn:
        out["knn_top1"] = knn_classify(tx, ty, vx, vy, k=cfg.eval.knn_k, temperature=cfg.eval.knn_temperature)
        out["knn_k"] = cfg.eval.knn_k
    return out


def evaluate_checkpoint(path: str | Path, cfg: Config, linear: bool = True, knn: bool = True,
                        progress: bool = True) -> dict:
    """:func:`evaluate_encoder` of a checkpoint's encoder with ``cfg``'s data and evaluation
    settings (``cfg`` must describe the checkpoint's model). The linear probe is saved beside the
    checkpoint with its provenance (``checkpoint.save_probe``). The record carries the
    checkpoint's epoch and file stamp, so a cached record can be checked against the file."""
    from .checkpoint import check_same_model, file_stamp, load_pretrained, save_probe
    from .config import to_dict
    from .runtime import resolve_device

    stamp = file_stamp(path)  # before reading: a file rewritten meanwhile is evaluated again later
    device = resolve_device(cfg.train.device)
    pre = load_pretrained(path, device=device)
    check_same_model(to_dict(pre.config), cfg, path)
    res = evaluate_encoder(pre.encoder, cfg, device=device, linear=linear, knn=knn, progress=progress)
    probe = res.pop("probe", None)
    if probe is not None:
        save_probe(path, probe, pre.encoder, pre.epoch, to_dict(cfg)["data"], res["linear_protocol"],
                   {k: res[k] for k in ("linear_top1", "linear_top5")})
    return {"checkpoint": str(path), "epoch": pre.epoch, **stamp, **res}


def is_current(record: dict | None, path: str | Path) -> bool:
    """Whether ``record`` (from :func:`evaluate_checkpoint`) was made from the file at ``path``."""
    from .checkpoint import file_stamp

    return isinstance(record, dict) and Path(path).is_file() and all(
        record.get(k) == v for k, v in file_stamp(path).items())


@torch.no_grad()
def online_evaluation(encoder: nn.Module, probe: nn.Module | None, cfg: Config, device: torch.device,
                      knn: bool = False) -> dict[str, float]:
    """During pre-training: the online probe's top-1 on the validation split (centre crops, eval
    mode) and, with ``knn``, the weighted kNN top-1 (%)."""
    train, val = eval_splits(cfg.data, cfg.augment)
    bs, workers = cfg.eval.linear_batch_size, cfg.data.num_workers
    vx, vy = extract_features(encoder, val, bs, device, workers, False)
    out: dict[str, float] = {}
    if probe is not None:
        with eval_mode(probe):
            out["online_probe_val_top1"] = topk_accuracy(probe(vx.to(device)).cpu(), vy, 1)
    if knn:
        tx, ty = extract_features(encoder, train, bs, device, workers, False)
        out["knn_top1"] = knn_classify(tx, ty, vx, vy, k=cfg.eval.knn_k, temperature=cfg.eval.knn_temperature)
    return out
