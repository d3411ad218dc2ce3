"""Linear probes for the analyses that score accuracy: the checks, and with ``train_probe=true`` a
probe trained (``cossl-train linear-probe``'s protocol, ``eval.*``) for a checkpoint without one,
kept under the output folder (never beside the checkpoint) and reused by later runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from cossl_analysis.errors import AnalysisError
from cossl_analysis.report.loading import EvalSet, Model, weights_fingerprint
from cossl_train.atomic import atomic_write
from cossl_train.config import Config

__all__ = ["ensure_probes", "require_probes"]


def require_probes(models: Sequence[Model], data: EvalSet, what: str,
                   alternative: str = "pass train_probe=true") -> None:
    """Raise (one line) unless every model has a probe that can score the labelled ``data``.

    ``what`` names the analysis in the message; ``alternative`` is offered as the other way out.
    """
    for m in models:
        if m.probe is None:
            raise AnalysisError(f"{m.path} has no linear probe, which {what} needs; run "
                                f"`cossl-train linear-probe {m.path}` first, or {alternative}")
    if data.labels is None:
        raise AnalysisError(f"{what} needs labelled images, but the evaluation set ({data.description}) has no labels "
                            "(point data.root / data.val_root at a folder with class subfolders)")
    for m in models:
        assert m.probe is not None
        if m.probe.out_features < data.num_classes:
            raise AnalysisError(
                f"the probe of {m.label} predicts {m.probe.out_features} classes but the evaluation set has labels "
                f"up to {data.num_classes - 1}; evaluate on the data the probe was trained for (data.* overrides)"
            )


def _cache_key(model: Model, cfg: Config) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(weights_fingerprint(model.encoder).encode())
    settings = {"data": vars(cfg.data), "eval": vars(cfg.eval), "seed": cfg.train.seed,
                "resolution": cfg.augment.resolution}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _train_probe(model: Model, cfg: Config, device: torch.device, progress: bool) -> dict:
    from cossl_train.evaluate import eval_splits, extract_features, linear_probe

    train, val = eval_splits(cfg.data, cfg.augment)
    bs, workers = cfg.eval.linear_batch_size, cfg.data.num_workers
    tx, ty = extract_features(model.encoder, train, bs, device, workers, progress, f"encode train {model.label}")
    vx, vy = extract_features(model.encoder, val, bs, device, workers, progress, f"encode val {model.label}")
    if (ty < 0).any() or (vy < 0).any():
        raise AnalysisError(f"train_probe=true needs labelled training images, but data.dataset={cfg.data.dataset} "
                            f"data.root={cfg.data.root!r} has unlabelled images")
    res = linear_probe(tx, ty, vx, vy, epochs=cfg.eval.linear_epochs, lr=cfg.eval.linear_lr, batch_size=bs,
                       weight_decay=cfg.eval.linear_weight_decay, seed=cfg.train.seed, progress=progress)
    return {"probe": res.probe.state_dict(), "top1": res.top1, "epochs": cfg.eval.linear_epochs}


def ensure_probes(models: Sequence[Model], cfg: Config, probe_dir: Path, device: torch.device,
                  progress: bool = True) -> list[Model]:
    """Every model, a probe-less one given a probe trained on the training split of ``cfg.data``."""
    out = []
    for model in models:
        if model.probe is not None:
            out.append(model)
            continue
        path = probe_dir / f"{_cache_key(model, cfg)}.probe.pt"
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
        else:
            stored = _train_probe(model, cfg, device, progress)
            atomic_write(path, lambda handle, s=stored: torch.save(s, handle))
        weight = stored["probe"]["weight"]
        probe = nn.Linear(weight.shape[1], weight.shape[0])
        probe.load_state_dict(stored["probe"])
        source = (f"linear probe trained by cossl-analysis ({stored['epochs']} epochs, top-1 {stored['top1']:.1f}% "
                  f"on the full validation split; {path.name})")
        out.append(replace(model, pretrained=replace(model.pretrained, probe=probe.to(device).eval()),
                           probe_source=source))
    return out
