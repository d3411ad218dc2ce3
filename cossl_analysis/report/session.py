"""One analysis run (:class:`Session`): the checkpoints, their shared evaluation images, the settings,
the output folder and its result store; and what a section contributes to the report (:class:`Section`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cossl_analysis.config import AnalysisConfig
from cossl_analysis.errors import AnalysisError
from cossl_analysis.report.loading import EvalSet, Model, check_resolutions, load_eval_set, load_models
from cossl_analysis.report.store import ResultStore
from cossl_train.paired import mean_std

__all__ = ["PCT", "FigureRef", "Section", "Session", "Table", "open_session", "pm", "pm_rows", "seed_curves"]

PCT = 100.0  # accuracies are stored as fractions, shown in %

#: config sections that ``key=value`` overrides may change (the model itself may not change)
OVERRIDE_SECTIONS = ("data", "augment", "eval")


@dataclass
class FigureRef:
    """A PNG under the output folder (relative path) and its caption."""

    path: str
    caption: str


@dataclass
class Table:
    """A table of formatted cells; ``note`` is a line of explanation under it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Section:
    """What one analysis contributes to the report: paragraphs, figures, tables, raw-number files
    (relative to the output folder), its numbers (``summary``, JSON-able) and per group the few
    numbers of the report's summary table (``headline``). ``key`` and ``title`` come from the registry."""

    text: list[str] = field(default_factory=list)
    figures: list[FigureRef] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    headline: dict[str, dict[str, str]] = field(default_factory=dict)
    key: str = ""
    title: str = ""


def pm(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± std`` over the seeds (just the value for one seed), times ``scale``."""
    mean, std = mean_std(values)
    if np.isnan(mean):
        return "-"
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if len(values) > 1 else "")


@dataclass
class Session:
    """Everything a section builder reads: ``groups()`` (checkpoints sharing a label are seeds of one
    group), ``cached(...)`` (a result kept in the store, computed only when missing) and
    ``features(model)`` (global and local representations, computed once per model and run)."""

    models: list[Model]
    data: EvalSet
    config: AnalysisConfig
    out: Path
    store: ResultStore
    device: torch.device
    overrides: list[str]
    progress: bool = True
    _features: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)
    #: every sweep point read or computed in this run: (label, sweep, setting, level) -> record
    accuracy_records: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict, repr=False)

    def groups(self) -> dict[str, list[Model]]:
        """Group -> its checkpoints (the seeds), in the order given."""
        out: dict[str, list[Model]] = {}
        for m in self.models:
            out.setdefault(m.group, []).append(m)
        return out

    def per_group(self, value: Callable[[Model], Any]) -> dict[str, list[Any]]:
        """Group -> the value of each of its seeds."""
        return {group: [value(m) for m in models] for group, models in self.groups().items()}

    def spread_name(self, single: str) -> str:
        """What a band shows: the std over seeds when a group has several, else ``single``."""
        return "std over seeds" if any(len(v) > 1 for v in self.groups().values()) else single

    @property
    def chance(self) -> float:
        """Chance top-1 (%) on the evaluation images."""
        return PCT / self.data.num_classes

    def key(self, model: Model, analysis: str, params: dict[str, Any]) -> str:
        """Store key of ``analysis`` with ``params`` on ``model`` and the evaluation images."""
        return f"{model.fingerprint}/{self.data.fingerprint}/{analysis}/{json.dumps(params, sort_keys=True)}"

    def cached(self, model: Model, analysis: str, params: dict[str, Any],
               compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored result of ``analysis`` on ``model``, computed (and stored) when missing."""
        record, _ = self.store.cached(self.key(model, analysis, params), compute)
        return record

    def features(self, model: Model) -> tuple[Tensor, Tensor]:
        """(global (N, C), local (N, P, C)) representations of the evaluation images, once per model."""
        from cossl_analysis.analyses.features import representations

        if model.label not in self._features:
            self._features[model.label] = representations(model.encoder, self.data.images, self.config.batch_size)
        return self._features[model.label]

    def feature_map(self, model: Model) -> tuple[int, int]:
        """(h, w) of the model's feature map on the evaluation images."""
        from cossl_analysis.analyses.features import feature_map_size

        return feature_map_size(model.encoder, self.data.images)

    def path(self, *parts: str) -> Path:
        """A path under the output folder (its parent created)."""
        path = self.out.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.out))


def open_session(paths: Sequence[str | Path], out: Path, config: AnalysisConfig, overrides: Sequence[str] = (),
                 labels: Sequence[str] | None = None, need_probes: bool = False, progress: bool = True) -> Session:
    """Load the checkpoints, probes where asked, and the evaluation images: the validation split of
    the *first* checkpoint's data config with ``overrides`` (data.*, augment.*, eval.*) applied."""
    from cossl_analysis.report.probes import ensure_probes
    from cossl_train.config import apply_overrides
    from cossl_train.runtime import resolve_device

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device, key="device")
    models = load_models(paths, labels, device)
    check_resolutions(models)
    cfg = apply_overrides(models[0].config, list(overrides), sections=OVERRIDE_SECTIONS)
    if need_probes and not config.train_probe:
        _require_probe_files(models)
    data = load_eval_set(cfg, config.images, config.seed, progress)
    out.mkdir(parents=True, exist_ok=True)
    if need_probes and config.train_probe:
        models = ensure_probes(models, cfg, out / "probes", device, progress)
    if config.robustness.cache_dir is None:  # a copy: the caller's config stays as given
        robustness = dataclasses.replace(config.robustness, cache_dir=str(out / "corruption_cache"))
        config = dataclasses.replace(config, robustness=robustness)
    return Session(models, data, config, out, ResultStore(out / "cells.json"), device, list(overrides), progress)


def _require_probe_files(models: Sequence[Model]) -> None:
    """Refuse probe-less checkpoints before any image is loaded (the full checks follow in preflight)."""
    for m in models:
        if m.probe is None:
            raise AnalysisError(f"{m.path} has no linear probe; run `cossl-train linear-probe {m.path}` first "
                                "or pass train_probe=true")


def pm_rows(values: dict[str, list[Sequence[float]]], scale: float = 1.0, digits: int = 3) -> list[list[str]]:
    """One row per group: the group, then mean ± std over its seeds of each column."""
    return [[g, *[pm([seed[t] for seed in seeds], scale, digits) for t in range(len(seeds[0]))]]
            for g, seeds in values.items()]


def seed_curves(results: dict[str, dict[str, Any]], session: Session,
                keys: Sequence[str]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(group -> mean over its seeds of the lists under ``keys``, group -> their std), from
    label -> result dicts; the other entries are the first seed's."""
    means: dict[str, dict[str, Any]] = {}
    stds: dict[str, dict[str, Any]] = {}
    for group, models in session.groups().items():
        first = results[models[0].label]
        means[group], stds[group] = dict(first), dict(first)
        for key in keys:
            if first.get(key) is None:
                continue
            stack = np.array([results[m.label][key] for m in models], dtype=float)
            means[group][key] = stack.mean(axis=0).tolist()
            stds[group][key] = (stack.std(axis=0, ddof=1) if len(models) > 1 else np.zeros(stack.shape[1])).tolist()
    return means, stds
