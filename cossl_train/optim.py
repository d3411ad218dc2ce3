"""Optimizers (LARS from timm, SGD, AdamW) and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig


def effective_lr(cfg: OptimConfig, global_batch: int) -> float:
    """The peak learning rate actually used; printed at start so nothing is rescaled silently."""
    return cfg.lr * global_batch / 256 if cfg.lr_scaling == "linear" else cfg.lr


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed, LARS-adapted) and biases/normalisation parameters (neither,
    as in BYOL and MoCo-v3). ``lars_adapt`` says which group LARS adapts, whatever the decay."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lars_adapt": True},
            {"params": no_decay, "weight_decay": 0.0, "lars_adapt": False}]


def build_optimizer(module: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(module, cfg.weight_decay)
    if cfg.name == "lars":
        from timm.optim import Lars

        # timm adapts a group only when its decay is non-zero unless always_adapt is set: with
        # optim.weight_decay=0 the weights would silently get plain SGD at the LARS rate
        for g in groups:
            g["always_adapt"] = g.pop("lars_adapt")
        return Lars(groups, lr=lr, momentum=cfg.momentum, trust_coeff=cfg.lars_eta, trust_clip=cfg.lars_clip)
    for g in groups:
        del g["lars_adapt"]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), fused=_fused_supported(module))
    raise ValueError(f"optim.name={cfg.name!r} is not one of lars, sgd, adamw")


_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _fused_supported(module: nn.Module) -> bool | None:
    """True where torch has a fused AdamW kernel for every parameter (CPU, CUDA; floating point): one
    kernel for all tensors instead of a loop of small ones (about 5x faster on 2 CPU cores for
    the demo's 72 tensors), the same update up to rounding. None (torch's default) elsewhere."""
    params = list(module.parameters())
    ok = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for p in params)
    return True if ok else None


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float, min_ratio: float = 0.0) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine down to min_ratio*peak."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return peak
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    floor = peak * min_ratio
    return floor + (peak - floor) * (1 + math.cos(math.pi * progress)) / 2


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
