"""Linear probes for the analyses that score accuracy: the checks (every model has one, of one kind
across the comparison), and with ``train_probe=missing|all`` probes trained by ``cossl-train
linear-probe``'s own code (``cossl_train.evaluate.evaluate_encoder``, ``eval.*`` settings), kept
under the output folder (never beside a checkpoint) and reused by later runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cossl_analysis.errors import AnalysisError
from cossl_analysis.report.loading import PROBE_KINDS, EvalSet, Model, weights_fingerprint
from cossl_train.atomic import atomic_write
from cossl_train.config import Config

__all__ = ["check_probe_kinds", "ensure_probes", "planned_kind", "require_probes"]

# Bump when what a stored probe file holds, or how it is trained, changes.
_VERSION = 2


def planned_kind(model: Model, train_probe: str, protocol: str) -> str:
    """The kind of probe ``model`` will be scored with (a key of ``PROBE_KINDS``)."""
    if train_probe == "all" or (train_probe == "missing" and model.probe is None):
        return protocol
    return model.probe_kind


def check_probe_kinds(models: Sequence[Model], train_probe: str, protocol: str, mixed: bool) -> None:
    """Refuse (one line) a comparison whose models would be scored with probes of different kinds,
    unless ``mixed``: an online probe and an offline one differ by many points on one checkpoint."""
    kinds = {m.label: planned_kind(m, train_probe, protocol) for m in models}
    if mixed or len({k for k in kinds.values() if k != "none"}) <= 1:
        return
    which = "; ".join(f"{label}: {PROBE_KINDS[k]}" for label, k in kinds.items())
    raise AnalysisError(f"the models of this comparison would be scored with probes of different kinds ({which}); "
                        "pass train_probe=all to train the same protocol for every model, or mixed_probes=true to "
                        "compare them anyway")


def require_probes(models: Sequence[Model], data: EvalSet | None, what: str, without: str = "") -> None:
    """Raise (one line) unless every model has a probe that can score the labelled ``data``.

    ``what`` names the analysis in the message; ``without`` is the setting that runs it without one;
    without ``data`` only the models are checked.
    """
    other = f" (or {without})" if without else ""
    for m in models:
        if m.probe is None and m.is_external:
            raise AnalysisError(f"{m.source} is an external model and has no linear probe, which {what} needs; pass "
                                f"train_probe=all to train the same protocol for every model{other}")
        if m.probe is None:
            raise AnalysisError(f"{m.source} has no linear probe, which {what} needs; run "
                                f"`cossl-train linear-probe {m.source}` first, or pass train_probe=missing{other}")
    if data is None:
        return
    if data.labels is None:
        raise AnalysisError(f"{what} needs labelled images, but the evaluation set ({data.description}) has no labels "
                            "(point data.root / data.val_root at a folder with class subfolders)")
    for m in models:
        assert m.probe is not None
        if m.probe.out_features < data.num_classes:
            raise AnalysisError(
                f"the probe of {m.label} predicts {m.probe.out_features} classes but the evaluation set has "
                f"{data.num_classes}; evaluate on the data the probe was trained for (data.* overrides)"
            )


def probe_config(model: Model, cfg: Config) -> Config:
    """What ``cossl-train linear-probe`` would run for ``model`` with these evaluation settings: the
    shared data, augment and eval sections, and the checkpoint's own ``train.seed``."""
    if model.seed is None:
        return cfg
    return replace(cfg, train=replace(cfg.train, seed=model.seed))


def _cache_key(model: Model, cfg: Config) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"v{_VERSION}|".encode())
    digest.update(weights_fingerprint(model.encoder).encode())
    digest.update(str(getattr(model.encoder, "description", "")).encode())
    settings = {"data": vars(cfg.data), "eval": vars(cfg.eval), "seed": cfg.train.seed,
                "resolution": cfg.augment.resolution}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _train_probe(model: Model, cfg: Config, device: torch.device, progress: bool) -> dict[str, Any]:
    """The probe ``cossl-train linear-probe`` trains (and its kNN), by its own code."""
    from cossl_train.errors import DataError
    from cossl_train.evaluate import evaluate_encoder

    try:
        res = evaluate_encoder(model.encoder, cfg, device=device, linear=True, knn=True, progress=progress)
    except DataError as err:
        raise AnalysisError(f"training a probe for {model.label} (train_probe): {err}") from None
    return {"probe": res["probe"].state_dict(), "protocol": res["linear_protocol"], "top1": res["linear_top1"],
            "top5": res["linear_top5"], "knn_top1": res["knn_top1"], "n_train": res["n_train"], "n_val": res["n_val"],
            "epochs": cfg.eval.linear_epochs}


def ensure_probes(models: Sequence[Model], cfg: Config, probe_dir: Path, device: torch.device,
                  progress: bool = True, train: str = "missing") -> list[Model]:
    """Every model with a probe: those without one (``train="missing"``) or all (``"all"``) given
    the probe ``cossl-train linear-probe`` trains on the training split of ``cfg.data``."""
    out = []
    for model in models:
        if train == "false" or (train == "missing" and model.probe is not None):
            out.append(model)
            continue
        mine = probe_config(model, cfg)
        path = probe_dir / f"{_cache_key(model, mine)}.probe.pt"
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
        else:
            stored = _train_probe(model, mine, device, progress)
            atomic_write(path, lambda handle, s=stored: torch.save(s, handle))
        weight = stored["probe"]["weight"]
        probe = nn.Linear(weight.shape[1], weight.shape[0])
        probe.load_state_dict(stored["probe"])
        kind = str(stored["protocol"])
        source = (f"{PROBE_KINDS[kind]} trained by cossl-analysis as cossl-train linear-probe does ({stored['epochs']} "
                  f"epochs, train.seed={mine.train.seed}; top-1 {stored['top1']:.1f}%, kNN top-1 "
                  f"{stored['knn_top1']:.1f}% on the {stored['n_val']} images of the full evaluation split; "
                  f"{path.name})")
        scores = {"probe_top1": float(stored["top1"]), "knn_top1": float(stored["knn_top1"]),
                  "n_val": int(stored["n_val"])}
        out.append(replace(model.with_probe(probe.to(device).eval(), source, kind), probe_scores=scores))
    return out
