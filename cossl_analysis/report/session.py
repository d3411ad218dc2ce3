"""One analysis run (:class:`Session`): the checkpoints, their shared evaluation images, the settings,
the output folder and its result store; and what a section contributes to the report (:class:`Section`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
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
from cossl_analysis.report.paired import Metric
from cossl_analysis.report.store import ResultStore
from cossl_train.config import Config
from cossl_train.paired import binomial_error, mean_std

__all__ = ["BINOMIAL_NOTE", "PCT", "FigureRef", "Metric", "Section", "Session", "Table", "evaluation_config",
           "open_session", "pm", "pm_rows", "seed_curves"]

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
    (relative to the output folder), its numbers (``summary``, JSON-able) and the few numbers of the
    report's summary table, per model (``metrics``: the summary gives them per group and paired where
    groups meet). ``key`` and ``title`` come from the registry."""

    text: list[str] = field(default_factory=list)
    figures: list[FigureRef] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    key: str = ""
    title: str = ""


#: the note under every table with accuracies
BINOMIAL_NOTE = ("A single seed's accuracy shows its binomial error, sqrt(p (1 - p) / n) over the n evaluation "
                 "images; several seeds show mean ± std over the seeds.")


def pm(values: Sequence[float | None], scale: float = 1.0, digits: int = 3, n_images: int | None = None) -> str:
    """``mean ± std`` over the seeds, times ``scale``; one seed: just the value, or with ``n_images``
    (an accuracy, as a fraction) its binomial error over that many images."""
    mean, std = mean_std(values)
    if np.isnan(mean):
        return "-"
    if len([v for v in values if v is not None]) > 1:
        return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"
    if n_images:
        return f"{scale * mean:.{digits}f} (± {scale * binomial_error(mean, n_images):.{digits}f} binomial)"
    return f"{scale * mean:.{digits}f}"


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
    #: what a section makes once per run and keeps for itself (co_objective's second view)
    scratch: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the config the evaluation images come from (its data, augment and eval sections)
    eval_config: Config | None = None
    #: what the reader must know about this run (images fewer than asked, a fallback data set, groups
    #: split): at the top of the page, in the manifest, and on stderr as they are found
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Record ``text`` for the page and the manifest, and say it on stderr now (logger ``cossl_analysis``)."""
        if text not in self.notes:
            self.notes.append(text)
            logging.getLogger("cossl_analysis").warning("note: %s", text)

    def groups(self) -> dict[str, list[Model]]:
        """Group -> its checkpoints (the seeds), in the order given."""
        out: dict[str, list[Model]] = {}
        for m in self.models:
            out.setdefault(m.group, []).append(m)
        return out

    def per_group(self, value: Callable[[Model], Any]) -> dict[str, list[Any]]:
        """Group -> the value of each of its seeds."""
        return {group: [value(m) for m in models] for group, models in self.groups().items()}

    def probe_text(self, models: Sequence[Model]) -> str:
        """The kind(s) of probe the models are scored with, in words (tables name it)."""
        from cossl_analysis.report.loading import PROBE_KINDS

        return ", ".join(sorted({PROBE_KINDS[m.probe_kind] for m in models}))

    def require_map(self, analysis: str) -> None:
        """Refuse (one line, naming the model and a resolution that works) a map of fewer than 2x2
        positions at the evaluation resolution: there the one local representation is the global one."""
        from cossl_analysis.external import require_map_size

        for m in self.models:
            try:
                require_map_size(m.encoder, int(self.data.images.shape[-1]), analysis)
            except AnalysisError as err:
                text = str(err)
                if any(not x.is_external for x in self.models):  # a checkpoint's images: the data override
                    text = re.sub(r"\(external\.resolution=(\d+), or resolution=\d+ in Python\)",
                                  r"(augment.resolution=\1)", text)
                raise AnalysisError(f"{m.label} ({m.source}): {text}" if m.source not in text else text) from None

    @staticmethod
    def seed_name(model: Model) -> str:
        """How a figure names one seed: ``seed 1`` (``train.seed``), else the model's label."""
        return f"seed {model.seed}" if model.seed is not None else model.label

    def series_name(self, group: str) -> str:
        """A group as a figure's legend names it: ``BYOL (3 seeds)`` or, for one model, which one
        (``BYOL (seed 0)``)."""
        models = self.groups()[group]
        if len(models) > 1:
            return f"{group} ({len(models)} seeds)"
        name = self.seed_name(models[0])
        return group if name == models[0].label else f"{group} ({name})"

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


def evaluation_config(models: Sequence[Model], overrides: Sequence[str] = (), resolution: int | None = None) -> Config:
    """The config whose data and augment sections pick the evaluation images: the first cossl
    checkpoint's, else the defaults (the embedded digit scenes) at the first external model's
    resolution; then the ``overrides`` (data.*, augment.*, eval.*)."""
    from cossl_train.config import Config, apply_overrides

    trained = [m for m in models if not m.is_external]
    if trained:
        base = trained[0].config
        assert base is not None
        if resolution is not None and resolution != trained[0].resolution:
            raise AnalysisError(f"external.resolution={resolution} differs from the {trained[0].resolution} px the "
                                f"checkpoint {trained[0].source} was trained at; every model is evaluated on the same "
                                "images, so leave external.resolution out when a checkpoint is in the comparison")
    else:
        base = apply_overrides(Config(), [f"augment.resolution={resolution or models[0].resolution}"])
    return apply_overrides(base, list(overrides), sections=OVERRIDE_SECTIONS)


def open_session(paths: Sequence[str | Path], out: Path, config: AnalysisConfig, overrides: Sequence[str] = (),
                 labels: Sequence[str] | None = None, need_probes: bool = False, progress: bool = True,
                 probe_for: str = "an analysis of this command", without_probe: str = "",
                 before_probes: Callable[[Session], None] | None = None) -> Session:
    """Load the models (checkpoints and model specs), the evaluation images (:func:`evaluation_config`)
    and, where asked, train probes; ``probe_for`` names what needs a probe, ``without_probe`` the
    setting that would spare it, and ``before_probes`` refuses what it must before any probe is
    trained (the analyses' checks)."""
    from cossl_analysis.report.probes import check_probe_kinds, ensure_probes
    from cossl_analysis.report.setups import split_groups
    from cossl_train.runtime import resolve_device

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device, key="device")
    ext = config.external
    models = load_models(paths, labels, device, layer=ext.layer, global_pool=ext.global_pool, mean=ext.mean,
                         std=ext.std, resolution=ext.resolution)
    models, group_notes = split_groups(models)  # only replicas are seeds of one group
    check_resolutions(models)
    cfg = evaluation_config(models, overrides, ext.resolution)
    for m in models:  # external models run at the evaluation images' side (their descriptions say so)
        if m.is_external and m.resolution != cfg.augment.resolution:
            m.encoder.set_resolution(cfg.augment.resolution)  # type: ignore[operator]
    if need_probes:
        if config.train_probe == "false":
            _require_probe_files(models, probe_for, without_probe)
        check_probe_kinds(models, config.train_probe, cfg.eval.linear_protocol, config.mixed_probes)
    data = load_eval_set(cfg, config.images, config.seed, progress)
    if config.robustness.cache_dir is None:  # a copy: the caller's config stays as given
        robustness = dataclasses.replace(config.robustness, cache_dir=str(out / "corruption_cache"))
        config = dataclasses.replace(config, robustness=robustness)
    session = Session(models, data, config, out, ResultStore(out / "cells.json"), device, list(overrides), progress,
                      eval_config=cfg)
    for text in [*group_notes, *data_notes(models, overrides, cfg), *image_notes(data, config.images)]:
        session.note(text)
    if before_probes is not None:
        before_probes(session)
    out.mkdir(parents=True, exist_ok=True)
    if need_probes and config.train_probe != "false":
        session.models = ensure_probes(models, cfg, out / "probes", device, progress, config.train_probe)
    return session


def data_notes(models: Sequence[Model], overrides: Sequence[str], cfg: Config) -> list[str]:
    """The fallback of a comparison of external models only, said aloud: without a checkpoint's data
    config and without ``data.*`` settings, the images are the package's embedded digit scenes, not
    the data the models were trained on."""
    if any(not m.is_external for m in models) or any(o.startswith("data.") for o in overrides):
        return []
    return [f"no cossl checkpoint and no data.* setting: the evaluation images are the package's embedded digit "
            f"scenes (data.dataset={cfg.data.dataset}), not the data the external models were trained on; pass "
            "data.dataset=imagefolder data.root=DIR (and data.val_root=DIR) to evaluate on your own images"]


def image_notes(data: EvalSet, requested: int) -> list[str]:
    """What differs between the images asked for (``images=N``, 0 = all) and those used."""
    notes = []
    if requested > data.split_size:
        notes.append(f"images={requested} asked for, but the evaluation split ({data.description}) holds "
                     f"{data.split_size}: all {data.split_size} are used")
    if data.skipped:
        notes.append(f"{data.skipped} unreadable image(s) skipped: {len(data)} evaluation images are used")
    return notes


def _require_probe_files(models: Sequence[Model], what: str, without: str = "") -> None:
    """Refuse probe-less models before any image is loaded (the full checks follow in preflight)."""
    from cossl_analysis.report.probes import require_probes

    require_probes(models, None, what, without)


def pm_rows(values: dict[str, list[Sequence[float]]], scale: float = 1.0, digits: int = 3,
            n_images: int | None = None) -> list[list[str]]:
    """One row per group: the group, then mean ± std over its seeds of each column (``n_images``:
    accuracies, a single seed with its binomial error)."""
    return [[g, *[pm([seed[t] for seed in seeds], scale, digits, n_images) for t in range(len(seeds[0]))]]
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
            # sample std (ddof = 1); one seed has none (NaN: no band, null in JSON)
            spread = stack.std(axis=0, ddof=1) if len(models) > 1 else np.full(stack.shape[1], np.nan)
            stds[group][key] = spread.tolist()
    return means, stds
