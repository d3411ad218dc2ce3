"""Finished results, kept so that a rerun recomputes nothing it has: one record per result of one
checkpoint, keyed by everything its value depends on (weights hash, images hash, analysis, settings),
in ``cells.json`` (arrays in ``cells/*.npz``), both written atomically after every record."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cossl_analysis.errors import AnalysisError
from cossl_analysis.report.files import to_jsonable
from cossl_train import jsonio
from cossl_train.atomic import atomic_write

__all__ = ["ResultStore"]

# Bump when anything changes what a key maps to (so old stores are never misread).
_FORMAT = "cossl-analysis-cells"
_VERSION = 2
_ARRAYS = "__arrays__"


class ResultStore:
    """Records in a JSON file (and their arrays in ``.npz`` files beside it)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.array_dir = self.path.with_suffix("")
        self.records: dict[str, dict[str, Any]] = {}
        #: records written by this process (the report's "computed")
        self.puts = 0
        self._reused: set[str] = set()
        if self.path.is_file():
            try:
                data = jsonio.loads(self.path.read_text())
            except (OSError, ValueError) as err:
                raise AnalysisError(f"{self.path} is not readable ({err}); delete it to start afresh") from None
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise AnalysisError(f"{self.path} is not a cossl-analysis result store; use another --out")
            if data.get("version") == _VERSION:  # an older version is recomputed, not misread
                self.records = dict(data.get("cells", {}))
        #: the keys earlier runs left: only these count as reused
        self._earlier = frozenset(self.records)

    @property
    def reused(self) -> int:
        """Distinct results of earlier runs read by this process (a result computed in this run and
        read again later in it is not reused)."""
        return len(self._reused)

    def note_hit(self, key: str) -> None:
        """Count ``key`` as reused if an earlier run stored it."""
        if key in self._earlier:
            self._reused.add(key)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record (arrays loaded back), or None; a record whose arrays are lost is None."""
        record = self.records.get(key)
        if record is None or _ARRAYS not in record:
            return record
        try:
            with np.load(self.array_dir / record[_ARRAYS], allow_pickle=False) as arrays:
                loaded = {name: arrays[name] for name in arrays.files}
        except (OSError, ValueError):
            return None
        return {**{k: v for k, v in record.items() if k != _ARRAYS}, **loaded}

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` (numpy arrays go to an ``.npz``) and write the files before returning."""
        arrays = {k: v for k, v in record.items() if isinstance(v, np.ndarray)}
        plain = to_jsonable({k: v for k, v in record.items() if k not in arrays})
        if arrays:
            name = hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + ".npz"
            atomic_write(self.array_dir / name, lambda handle: np.savez(handle, **arrays))
            plain[_ARRAYS] = name
        self.records[key] = plain
        self.puts += 1
        payload = {"format": _FORMAT, "version": _VERSION, "cells": self.records}  # the on-disk key of version 2
        # valid JSON that reads back exactly: a NaN is stored as {"__float__": "nan"}
        text = jsonio.dumps(payload, nonfinite=jsonio.tag, indent=1, sort_keys=True).encode()
        atomic_write(self.path, lambda handle: handle.write(text))

    def cached(self, key: str, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """(the record under ``key``, computed and stored first if missing; whether it was reused)."""
        found = self.get(key)
        if found is not None:
            self.note_hit(key)
            return found, True
        record = compute()
        self.put(key, record)
        return self.get(key) or record, False
