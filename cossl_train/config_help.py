"""One line per config key, from the one place that describes it: the ``#:`` comment above each field
in ``cossl_train/config.py`` (read from the source, so the descriptions cannot drift from the
dataclasses; a test checks that every key has one). ``cossl-train config --explain`` prints them
with the resolved values; docs/training.md lists them."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
from typing import Any

__all__ = ["describe", "explain_lines", "field_comments"]


@functools.cache
def field_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> its ``#:`` comment lines above the field, joined into one line."""
    from . import config

    source = inspect.getsource(config)
    lines = source.splitlines()
    out: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                above: list[str] = []
                row = item.lineno - 2  # the line above the field (0-based)
                while row >= 0 and lines[row].strip().startswith("#:"):
                    above.insert(0, lines[row].strip()[2:].strip())
                    row -= 1
                if above:
                    out[(node.name, item.target.id)] = " ".join(above).replace("``", "")
    return out


def describe(cfg: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, value, description) of every leaf key of ``cfg`` (default: the defaults, ``Config()``)
    in declaration order; the description is "" where the field has no ``#:`` comment.

    >>> next(row for row in describe() if row[0] == "augment.c_min")
    ('augment.c_min', 0.08, "minimum scale of RandomResizedCrop (the paper's c_min)")
    """
    from .config import Config

    cfg = Config() if cfg is None else cfg
    comments = field_comments()
    rows: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(value, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", value, comments.get((type(cfg).__name__, f.name), "")))
    return rows


def _written(value: Any) -> str:
    """A value as it is written on the command line: null, true, [0.5,1.0]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(_written(v) for v in value) + "]"
    return str(value)


def explain_lines(cfg: Any = None) -> list[str]:
    """``key=value  description``, one line per key (``cossl-train config --explain``)."""
    rows = [(f"{key}={_written(value)}", text) for key, value, text in describe(cfg)]
    width = max(len(k) for k, _ in rows)
    return [f"{k:<{width}}  {text}" for k, text in rows]
