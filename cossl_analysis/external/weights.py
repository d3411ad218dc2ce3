"""Encoder weights from files as published SSL code writes them, mapped onto an architecture.

A weights file may hold the encoder's state_dict bare, or nested under a container key
(``state_dict``, ``model``, ``teacher``, ``student``, ``online_network``, ...), with its keys behind a
prefix that names the network inside the training wrapper (``module.`` for DataParallel,
``module.backbone.`` for DINO, ``module.base_encoder.`` for MoCo-v3, ``module.encoder_q.`` for
MoCo v1/v2, ``online_network.encoder.`` for BYOL, ...), next to the other networks of the method
(momentum encoder, projector, predictor, prototypes) and a classifier (``fc``, ``head``).

The mapping is not guessed from a fixed table but chosen by fit: every (container, prefix) pair
under which some key of the file becomes a key of the architecture is a candidate, scored by how
many of the architecture's tensors it supplies with the right shape. Ties (a momentum encoder is a
perfect copy of the online one) go to the known layouts in the order of :data:`CONTAINERS` and
:data:`KNOWN_PREFIXES` (teacher before student, base/online/query encoder before their momentum
twins). Keys outside the chosen prefix, and keys under it that belong to a classifier or projection
head (:data:`HEAD_NAMES`), are dropped and logged; anything else left over, or any tensor of the
architecture left unsupplied, is an error naming the first of each and the prefix tried.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cossl_analysis.errors import AnalysisError

__all__ = ["CONTAINERS", "HEAD_NAMES", "KNOWN_PREFIXES", "WeightsFit", "fit_state_dict", "find_state_dicts",
           "load_weights", "read_weights"]

log = logging.getLogger("cossl_analysis")

#: container keys holding a state_dict, in order of preference (DINO evaluates its teacher)
CONTAINERS = ("state_dict", "model", "teacher", "student", "online_network", "online_network_state_dict",
              "network", "net", "model_state_dict", "module", "backbone", "encoder", "params")

#: key prefixes of the encoder inside training wrappers, in order of preference on a tie
KNOWN_PREFIXES = ("", "module.", "backbone.", "module.backbone.", "module.base_encoder.", "base_encoder.",
                  "encoder_q.", "module.encoder_q.", "encoder.", "module.encoder.", "online_network.encoder.",
                  "online_encoder.", "model.", "model.backbone.", "model.encoder.", "net.", "teacher.backbone.",
                  "teacher.", "student.backbone.", "student.")

#: first key component (under the prefix) of a classifier or projection head: dropped, not an error
HEAD_NAMES = frozenset({"fc", "head", "heads", "classifier", "projector", "projection", "projection_head",
                        "proj_head", "predictor", "prediction", "prediction_head", "prototypes", "last_layer"})

_MAX_DEPTH = 3  # how deep nested dicts are searched for state_dicts


def read_weights(path: str | Path) -> Any:
    """The object stored in a weights file (``torch.save`` output or ``.safetensors``), on the CPU.

    Pickles are read with ``weights_only=True`` (no code runs), with ``argparse.Namespace`` allowed
    because published training scripts (DINO) store their arguments next to the weights.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise AnalysisError(f"weights file {path} {what}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - any failure to read is the same one-line error
            raise AnalysisError(f"cannot read weights file {path}: {_first_line(err)}") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        why = f"it pickles {found.group(1)}" if found else _first_line(err)
        raise AnalysisError(
            f"cannot read weights file {path} as tensors alone ({why}); save the model's state_dict() with "
            "torch.save, or build the model yourself and pass it to from_module") from None


def _first_line(err: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()  # torch colours some messages
    return text[0] if text else type(err).__name__


def find_state_dicts(obj: Any, where: str = "", depth: int = 0) -> list[tuple[str, dict[str, Tensor]]]:
    """Every dict holding tensors in ``obj`` (nested dicts searched ``_MAX_DEPTH`` deep), as
    (where: dotted container path, "" for the top, {key: tensor}) in the order found."""
    if not isinstance(obj, Mapping) or depth > _MAX_DEPTH:
        return []
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    found = [(where, tensors)] if tensors else []
    for key, value in obj.items():
        if isinstance(value, Mapping):
            found.extend(find_state_dicts(value, f"{where}.{key}" if where else str(key), depth + 1))
    return found


@dataclass
class WeightsFit:
    """How a file's keys map onto an architecture.

    Attributes:
        state: {architecture key: tensor}, ready for ``load_state_dict``.
        where: container path of the state_dict used ("" = the top level of the file).
        prefix: prefix stripped from its keys.
        numbered: the keys numbered the architecture's top-level children (``nn.Sequential(*children)``).
        dropped: {key group ("module.head"): number of keys under it} left out as not part of the encoder.
        ignored: the other containers of the file, not used.
        missing: architecture keys not supplied (non-empty means the weights do not fit).
        unexpected: file keys under the prefix that are neither architecture nor head keys.
        mismatched: {key: (file shape, architecture shape)} for keys of the wrong shape.
    """

    state: dict[str, Tensor]
    where: str
    prefix: str
    numbered: bool = False
    dropped: dict[str, int] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return not self.missing and not self.unexpected

    def dropped_text(self) -> str:
        return ", ".join(f"{group} ({n})" for group, n in self.dropped.items())


def _optional(key: str) -> bool:
    # BatchNorm's step counter: absent from older checkpoints and never used in eval mode
    return key.endswith("num_batches_tracked")


def _rename(rest: str, numbered: bool, children: list[str]) -> str | None:
    """``rest`` (a key with the prefix stripped) as an architecture key, or None when a numbered
    key names no child."""
    if not numbered:
        return rest
    first, dot, tail = rest.partition(".")
    if not first.isdigit() or int(first) >= len(children):
        return None
    return f"{children[int(first)]}{dot}{tail}"


def _rank(items: tuple[str, ...], value: str, fallback_len: bool = False) -> tuple[int, int]:
    if value in items:
        return items.index(value), 0
    return len(items), len(value) if fallback_len else 0


def _container_rank(where: str) -> tuple[int, int]:
    if not where:
        return -1, 0
    return _rank(CONTAINERS, where.rsplit(".", 1)[-1])[0], where.count(".")


def _group(key: str, prefix: str) -> str:
    """A dropped key's group for the log: one component past what it shares with the prefix
    (``module.head`` beside ``module.backbone.``; ``module.base_encoder.fc`` under ``module.base_encoder.``)."""
    parts, pre = key.split("."), prefix.split(".")[:-1]
    shared = 0
    while shared < min(len(parts) - 1, len(pre)) and parts[shared] == pre[shared]:
        shared += 1
    return ".".join(parts[: shared + 1])


def _candidates(keys: list[str], required: Mapping[str, torch.Size], children: list[str]) -> set[tuple[str, bool]]:
    """(prefix, numbered) pairs under which at least one key becomes an architecture key."""
    numbered_ok = bool(children) and not any(c.isdigit() for c in children)
    found: set[tuple[str, bool]] = set()
    for key in keys:
        cut = 0
        while True:
            prefix, rest = key[:cut], key[cut:]
            if rest in required:
                found.add((prefix, False))
            if numbered_ok and _rename(rest, True, children) in required:
                found.add((prefix, True))
            dot = key.find(".", cut)
            if dot < 0:
                break
            cut = dot + 1
    return found


def _evaluate(where: str, tensors: dict[str, Tensor], prefix: str, numbered: bool,
              required: Mapping[str, torch.Size], children: list[str]) -> WeightsFit:
    fit = WeightsFit({}, where, prefix, numbered)
    dropped: Counter[str] = Counter()
    for key, value in tensors.items():
        if not key.startswith(prefix):
            dropped[_group(key, prefix)] += 1
            continue
        rest = key[len(prefix):]
        name = _rename(rest, numbered, children)
        if name is not None and name in required:
            if tuple(value.shape) == tuple(required[name]):
                fit.state[name] = value
            else:
                fit.mismatched[name] = (tuple(value.shape), tuple(required[name]))
        elif rest.split(".")[0] in HEAD_NAMES or (name is not None and name.split(".")[0] in HEAD_NAMES):
            dropped[_group(key, prefix)] += 1
        else:
            fit.unexpected.append(key)
    # a key of the wrong shape is missing (and its shapes are named in the message), not unexpected
    fit.missing = [k for k in required if k not in fit.state and not _optional(k)]
    fit.dropped = dict(dropped)
    return fit


def fit_state_dict(obj: Any, required: Mapping[str, torch.Size], children: list[str] | None = None,
                   source: str = "the weights file") -> WeightsFit:
    """The best mapping of the state_dicts in ``obj`` (a loaded weights file) onto ``required``
    ({architecture key: shape}, in the architecture's order); see the module docstring.

    ``children``: the architecture's top-level child names, for files that number them. The result
    may not fit (``fit.fits``); :func:`load_weights` turns that into an error.
    """
    children = list(children or [])
    found = find_state_dicts(obj)
    if not found:
        raise AnalysisError(f"{source} holds no tensors")
    best: tuple[Any, ...] | None = None
    for where, tensors in found:
        pairs = _candidates(list(tensors), required, children) or {("", False)}
        for prefix, numbered in pairs:
            fit = _evaluate(where, tensors, prefix, numbered, required, children)
            score = (-len(fit.state), len(fit.unexpected), _container_rank(where),
                     _rank(KNOWN_PREFIXES, prefix, fallback_len=True), numbered, prefix)
            if best is None or score < best[0]:
                best = (score, fit)
    assert best is not None
    fit = best[1]
    fit.ignored = [where or "(top level)" for where, _ in found if where != fit.where]
    return fit


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def load_weights(target: nn.Module, path: str | Path, label: str, skip: tuple[str, ...] = (),
                 children: list[str] | None = None) -> WeightsFit:
    """Fill ``target`` from the weights file at ``path``, logging what was dropped.

    Args:
        target: the module to load into (the encoder's network).
        path: the weights file.
        label: the model in words, for messages (``torchvision:resnet50``).
        skip: key prefixes of ``target`` that the file need not supply (its classifier).
        children: top-level child names of ``target`` (default: its own), for numbered files.

    Raises:
        AnalysisError: one line naming the first missing and first unexpected key and the prefix.
    """
    path = Path(path).expanduser()
    required = {k: v.shape for k, v in target.state_dict().items() if not k.startswith(skip)}
    if children is None:
        children = [name for name, _ in target.named_children()]
    fit = fit_state_dict(read_weights(path), required, children, source=f"weights file {path}")
    if not fit.fits:
        raise AnalysisError(_misfit_message(fit, path, label))
    target.load_state_dict(fit.state, strict=False)
    inside = f" under {fit.where!r}" if fit.where else ""
    how = " (keys numbering its top-level children)" if fit.numbered else ""
    log.info("%s: loaded %d tensors from %s%s with key prefix %r%s", label, len(fit.state), path.name, inside,
             fit.prefix, how)
    if fit.dropped:
        log.info("%s: dropped %d keys of %s that are not part of the encoder: %s", label,
                 sum(fit.dropped.values()), path.name, fit.dropped_text())
    if fit.ignored:
        log.info("%s: ignored the other containers of %s: %s", label, path.name, ", ".join(fit.ignored))
    return fit


def _misfit_message(fit: WeightsFit, path: Path, label: str) -> str:
    missing = "none"
    if fit.missing:
        key = fit.missing[0]
        missing = repr(key)
        if key in fit.mismatched:
            have, want = fit.mismatched[key]
            missing += f" (the file's is {_shape(have)}, the architecture's {_shape(want)})"
    unexpected = repr(fit.unexpected[0]) if fit.unexpected else "none"
    inside = f" under {fit.where!r}" if fit.where else ""
    return (f"weights {path.name} do not fit {label} ({len(fit.state)} tensors matched, prefix tried: "
            f"{fit.prefix!r}{inside}): first missing key {missing}, first unexpected key {unexpected}")
