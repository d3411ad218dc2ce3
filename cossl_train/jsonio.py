"""Every JSON file the package writes is valid JSON (RFC 8259 has no NaN or Infinity): numbers that
are not finite become ``null`` (a reason goes beside them where one is known), numpy and torch
values become plain Python, and ``json.dumps`` runs with ``allow_nan=False`` so that nothing slips
through. The analysis store, which must read its numbers back exactly, tags them instead
(``nonfinite=tag``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads", "plain", "tag"]


def tag(x: float) -> dict[str, str]:
    """A non-finite float as a JSON object that :func:`loads` reads back: ``{"__float__": "nan"}``."""
    return {"__float__": repr(x)}


def plain(obj: Any, nonfinite: Callable[[float], Any] = lambda x: None) -> Any:
    """``obj`` with dict keys as strings, tuples as lists, numpy and torch scalars and arrays as
    Python numbers and lists, and every non-finite float replaced by ``nonfinite(x)`` (None).

    >>> import numpy as np
    >>> plain({"c": float("nan"), "x": np.float32(0.5), "n": np.arange(2), 1: (1.0, float("inf"))})
    {'c': None, 'x': 0.5, 'n': [0, 1], '1': [1.0, None]}
    """
    if isinstance(obj, dict):
        return {str(k): plain(v, nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, nonfinite) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else nonfinite(float(obj))
    if hasattr(obj, "detach"):  # a torch tensor, without importing torch here
        obj = obj.detach().cpu()
    if hasattr(obj, "tolist"):  # numpy and torch scalars and arrays
        return plain(obj.tolist(), nonfinite)
    return obj  # json.dumps refuses what it cannot write


def dumps(obj: Any, nonfinite: Callable[[float], Any] = lambda x: None, **kwargs: Any) -> str:
    """``json.dumps(plain(obj))`` with ``allow_nan=False``: always valid JSON.

    >>> dumps({"pearson_c": float("nan"), "pearson_c_note": "constant maps"})
    '{"pearson_c": null, "pearson_c_note": "constant maps"}'
    """
    return json.dumps(plain(obj, nonfinite), allow_nan=False, **kwargs)


def loads(text: str | bytes) -> Any:
    """``json.loads`` that reads the floats :func:`tag` wrote back as floats."""
    return json.loads(text, object_hook=lambda d: float(d["__float__"]) if d.keys() == {"__float__"} else d)
