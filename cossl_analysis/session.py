"""One analysis run: checkpoints, their shared evaluation images, options, output folder and store.

:func:`open_session` is the single entry point of the command line and of ``write_report``: it
loads the checkpoints (``load_models``), the evaluation images (the validation split of the *first*
checkpoint's data config, ``data.*``/``augment.*``/``eval.*`` overrides applied, the same images
for every checkpoint), probes where asked, and the cell store of the output folder.

The analyses read the models through :class:`Session`: ``groups()`` (checkpoints sharing a label
are seeds of one group), ``cached(...)`` (a result kept in the store, recomputed only when missing)
and ``features(model)`` (global and local representations, computed once per model and run).
Their output is a :class:`Section`: text, figures, tables and raw-number files, which the HTML
report renders.
"""

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

from cossl_analysis.errors import AnalysisError
from cossl_analysis.loading import EvalSet, Model, check_resolutions, load_eval_set, load_models, resolve_device
from cossl_analysis.options import AnalysisOptions
from cossl_analysis.store import CellStore

__all__ = ["FigureRef", "Section", "Session", "Table", "mean_std", "open_session", "pm"]

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
    """What one analysis contributes to the report.

    Attributes:
        key: short name (``erf``, ``similarity``, ...).
        title: heading.
        text: paragraphs (plain text).
        figures, tables: what to show.
        files: raw-number files (relative to the output folder), linked from the report.
        summary: the numbers, per model and per group (JSON-able); ``headline`` holds per group the
            few numbers of the report's summary table.
    """

    key: str
    title: str
    text: list[str] = field(default_factory=list)
    figures: list[FigureRef] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    headline: dict[str, dict[str, str]] = field(default_factory=dict)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the seeds of a group."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def pm(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± std`` over the seeds (just the value for one seed), times ``scale``."""
    mean, std = mean_std(values)
    if np.isnan(mean):
        return "-"
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if len(values) > 1 else "")


@dataclass
class Session:
    """Everything an analysis needs; see the module docstring."""

    models: list[Model]
    data: EvalSet
    options: AnalysisOptions
    out: Path
    store: CellStore
    device: torch.device
    overrides: list[str]
    progress: bool = True
    _features: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)
    #: every accuracy cell read or computed in this run: (label, sweep, setting, level) -> record
    cell_records: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict, repr=False)

    def groups(self) -> dict[str, list[Model]]:
        """Group -> its checkpoints (the seeds), in the order given."""
        out: dict[str, list[Model]] = {}
        for m in self.models:
            out.setdefault(m.group, []).append(m)
        return out

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
        from cossl_analysis.features import extract_features

        if model.label not in self._features:
            self._features[model.label] = extract_features(model.encoder, self.data.images, self.options.batch_size)
        return self._features[model.label]

    def feature_map(self, model: Model) -> tuple[int, int]:
        """(h, w) of the model's feature map on the evaluation images."""
        from cossl_analysis._utils import eval_mode
        from cossl_analysis.accuracy import pixels

        with eval_mode(model.encoder), torch.no_grad():
            fmap = model.encoder(pixels(self.data.images[:1], self.device))
        return int(fmap.shape[2]), int(fmap.shape[3])

    def path(self, *parts: str) -> Path:
        """A path under the output folder (its parent created)."""
        path = self.out.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.out))


def open_session(paths: Sequence[str | Path], out: Path, options: AnalysisOptions, overrides: Sequence[str] = (),
                 labels: Sequence[str] | None = None, need_probes: bool = False, progress: bool = True) -> Session:
    """Load everything the analyses need; see the module docstring for the one data rule."""
    from cossl_analysis.probes import ensure_probes
    from cossl_train.config import apply_overrides

    if options.threads is not None:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    models = load_models(paths, labels, device)
    check_resolutions(models)
    cfg = apply_overrides(models[0].config, list(overrides), sections=OVERRIDE_SECTIONS)
    if need_probes and not options.train_probe:
        _require_probe_files(models)
    data = load_eval_set(cfg, options.images, options.seed, progress)
    out.mkdir(parents=True, exist_ok=True)
    if need_probes and options.train_probe:
        models = ensure_probes(models, cfg, out / "probes", device, progress)
    if options.cache_dir is None:  # a copy: the caller's options stay as given
        options = dataclasses.replace(options, cache_dir=out / "corruption_cache")
    return Session(models, data, options, out, CellStore(out / "cells.json"), device, list(overrides), progress)


def _require_probe_files(models: Sequence[Model]) -> None:
    """Refuse probe-less checkpoints before any image is loaded (the full checks follow in preflight)."""
    for m in models:
        if m.probe is None:
            raise AnalysisError(f"{m.path} has no linear probe; run `cossl-train linear-probe {m.path}` first "
                                "or pass --train-probe")
