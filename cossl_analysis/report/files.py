"""Results as files: figures as PNG, numbers as JSON, NPZ and CSV. The ``save_*`` functions write one
analysis's figure with its raw numbers beside it (``fig.png`` -> ``fig.json``, ``.csv``, ``.npz``),
for notebooks and scripts; the report's sections use the same writers."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from cossl_analysis.analyses.internal_corruption import InternalCorruptionResult
from cossl_analysis.analyses.patch_drop import PatchDropResult
from cossl_analysis.analyses.similarity import SimilarityResult
from cossl_train import jsonio

__all__ = ["save_erf", "save_figure", "save_internal_corruption", "save_patch_drop", "save_similarity", "to_jsonable",
           "write_json", "write_pairs"]


def to_jsonable(obj: Any) -> Any:
    """numpy/torch scalars and arrays (recursively) as plain Python; non-finite floats are kept (the
    files the package writes turn them into null: :func:`write_json`)."""
    return jsonio.plain(obj, nonfinite=lambda x: x)


def write_json(obj: Any, path: str | Path) -> Path:
    """``obj`` as indented, valid JSON at ``path`` (parents created): a number that is not finite
    (an undefined Pearson C, the std of one seed) is ``null``, with its reason beside it where the
    result has one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(jsonio.dumps(obj, indent=2))
    return path


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """``fig`` as a PNG at ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def write_pairs(results: Mapping[str, SimilarityResult], path: str | Path) -> Path:
    """Every image pair's numbers as CSV: label, i, j, global_sim, local_sim."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "i", "j", "global_sim", "local_sim"])
        for label, res in results.items():
            rows = zip(res.pairs.tolist(), res.global_sim.tolist(), res.local_sim.tolist(), strict=True)
            for (i, j), gs, ls in rows:
                writer.writerow([label, i, j, repr(gs), repr(ls)])
    return path


def _labelled(result: Any, kind: type) -> dict[str, Any]:
    """One result (labelled ``model``) or label -> result."""
    return {"model": result} if isinstance(result, kind) else dict(result)


def save_erf(images: Tensor | np.ndarray, maps: np.ndarray, path: str | Path,
             positions: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """The ERF overlay (``viz.plot_erf``) at ``path``, the raw and normalised maps in ``.npz`` and a
    summary (positions, shape, per-map max and total) in ``.json``; returns the maps as drawn."""
    from cossl_analysis.analyses.erf import DEFAULT_POSITIONS
    from cossl_analysis.viz.erf import normalised_maps, per_image_maps, plot_erf

    positions = DEFAULT_POSITIONS if positions is None else positions
    maps = per_image_maps(images, maps)
    save_figure(plot_erf(images, maps, positions), path, dpi=100)
    shown = normalised_maps(maps)
    n_img, n_pos = maps.shape[:2]
    np.savez_compressed(Path(path).with_suffix(".npz"), maps=maps, normalised=shown)
    write_json({"positions": [list(p) for p in positions], "shape": list(maps.shape),
                "max": maps.reshape(n_img, n_pos, -1).max(axis=2), "total": maps.reshape(n_img, n_pos, -1).sum(axis=2)},
               Path(path).with_suffix(".json"))
    return shown


def save_similarity(result: SimilarityResult | Mapping[str, SimilarityResult], path: str | Path,
                    max_points: int = 20000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Figure 3B (one panel per result) at ``path``, every pair in ``.csv``, the summaries in
    ``.json``; at most ``max_points`` points per panel are drawn (the CSV has them all)."""
    from cossl_analysis.viz.similarity import plot_similarity_panels

    results = _labelled(result, SimilarityResult)
    save_figure(plot_similarity_panels(results, max_points=max_points, seed=seed), path, dpi=120)
    write_pairs(results, Path(path).with_suffix(".csv"))
    summaries = {label: res.summary() for label, res in results.items()}
    write_json(summaries, Path(path).with_suffix(".json"))
    return summaries


def save_patch_drop(result: PatchDropResult | Mapping[str, PatchDropResult], path: str | Path) -> dict[str, Any]:
    """Cosine (and accuracy) against the fraction dropped at ``path``, the numbers in ``.json``."""
    from cossl_analysis.viz.patch_drop import plot_patch_drop

    results = _labelled(result, PatchDropResult)
    save_figure(plot_patch_drop(results), path)
    raw = {label: r.to_dict() for label, r in results.items()}
    write_json(raw, Path(path).with_suffix(".json"))
    return raw


def save_internal_corruption(result: InternalCorruptionResult | Mapping[str, InternalCorruptionResult],
                             path: str | Path) -> dict[str, Any]:
    """Accuracy against corruption strength at ``path``, the numbers in ``.json``."""
    from cossl_analysis.viz.internal_corruption import plot_internal_corruption

    results = _labelled(result, InternalCorruptionResult)
    save_figure(plot_internal_corruption(results), path, dpi=120)
    raw = {label: r.to_dict() for label, r in results.items()}
    write_json(raw, Path(path).with_suffix(".json"))
    return raw
