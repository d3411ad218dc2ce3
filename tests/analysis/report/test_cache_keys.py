"""A stored result is reused only when nothing it depends on changed: for every setting of the
analyses that the report stores (similarity, ERF, patch dropping, the CO objective) and every
``augment.*`` setting of the CO objective's second view, a run that changes it after a run that did
not returns what a fresh run computes, never the stale result."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cossl_analysis.config import load_analysis_config
from cossl_analysis.report import co_objective as co_section
from cossl_analysis.report.erf import _record as erf_record
from cossl_analysis.report.patch_drop import drop_result
from cossl_analysis.report.session import Session, open_session
from cossl_analysis.report.similarity import similarity_result
from cossl_analysis.report.store import ResultStore
from cossl_train import jsonio
from cossl_train.config import AugmentConfig

BASE = ["images=8", "erf.images=2", "patch_drop.fractions=[0,0.5,1]", "batch_size=8"]

#: a changed value for every augment.* setting but the resolution (the images themselves: their hash is in every key)
AUGMENT = {"c_min": 0.5, "c_max": 0.9, "brightness": 0.9, "contrast": 0.9, "saturation": 0.8, "hue": 0.4,
           "jitter_p": 0.3, "grayscale_p": 0.9, "blur_p": (0.0, 1.0), "solarize_p": (1.0, 1.0), "local_crops": 2,
           "local_crop_scale": (0.1, 0.3), "local_resolution": 8, "local_blur_p": 0.1,
           "mean": (0.4, 0.4, 0.4), "std": (0.3, 0.3, 0.3)}
#: a changed value of every analysis setting the stored sections read
SETTINGS = ["seed=1", "batch_size=3", "similarity.mode=same", "similarity.max_pairs=7", "similarity.global=pooled",
            "erf.positions=[[0.5,0.5]]", "erf.images=1", "erf.chunk_size=1", "patch_drop.fractions=[0,0.25]",
            "patch_drop.mode=position", "patch_drop.order=raster"]


def _records(session: Session) -> dict[str, Any]:
    """What each stored section reads for the CO checkpoint, as plain numbers."""
    m = next(x for x in session.models if x.method_name == "co_byol")
    return jsonio.plain({"similarity": similarity_result(session, m).to_dict(), "erf": erf_record(session, m),
                         "patch_drop": drop_result(session, m, accuracy=False),
                         "co_objective": co_section._record(session, m)}, nonfinite=lambda x: x)


def _numbers(tree: Any) -> np.ndarray:
    if isinstance(tree, dict):
        return np.concatenate([_numbers(v) for _, v in sorted(tree.items())] or [np.zeros(0)])
    if isinstance(tree, list):
        return np.concatenate([_numbers(v) for v in tree] or [np.zeros(0)])
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return np.array([float(tree)])
    return np.array([float(hash(str(tree)) % 997)])  # strings (paths, modes) count as numbers too


def _with(session: Session, store: Path, overrides: list[str], augment: dict[str, Any]) -> Session:
    """The session with other settings, a store and no per-run scratch (the second view is made anew)."""
    assert session.eval_config is not None
    cfg = dataclasses.replace(session.eval_config, augment=dataclasses.replace(session.eval_config.augment, **augment))
    return dataclasses.replace(session, config=load_analysis_config([*BASE, *overrides]), store=ResultStore(store),
                               scratch={}, eval_config=cfg, notes=[])


@pytest.fixture(scope="module")
def session(tiny_checkpoints: dict, tmp_path_factory: pytest.TempPathFactory) -> Session:
    out = tmp_path_factory.mktemp("keys")
    return open_session([tiny_checkpoints["byol"], tiny_checkpoints["co_byol"]], out, load_analysis_config(BASE),
                        progress=False)


@pytest.fixture(scope="module")
def unchanged(session: Session) -> Path:
    """The store of a run with the base settings (copied by each test, so that none sees another's results)."""
    _records(_with(session, session.out / "unchanged" / "cells.json", [], {}))
    return session.out / "unchanged"


def test_the_table_covers_every_augment_setting() -> None:
    assert set(AUGMENT) == {f.name for f in dataclasses.fields(AugmentConfig)} - {"resolution"}


@pytest.mark.parametrize("change", [*SETTINGS, *(f"augment.{k}" for k in AUGMENT)])
def test_a_changed_setting_is_recomputed_not_read_stale(change: str, session: Session, unchanged: Path,
                                                       tmp_path: Path) -> None:
    key = change.split("=")[0].removeprefix("augment.")
    overrides, augment = ([], {key: AUGMENT[key]}) if change.startswith("augment.") else ([change], {})
    shutil.copytree(unchanged, tmp_path / "shared")  # the store of the unchanged run
    reused = _records(_with(session, tmp_path / "shared" / "cells.json", overrides, augment))  # the changed run
    fresh = _records(_with(session, tmp_path / "fresh.json", overrides, augment))
    for name in fresh:
        np.testing.assert_allclose(_numbers(reused[name]), _numbers(fresh[name]), rtol=1e-5, atol=1e-6,
                                   err_msg=f"{change}: {name}")


def test_the_second_view_changes_with_the_augmentation(session: Session) -> None:
    """The test above is not vacuous: most augment settings change the CO objective's second view."""
    images, seed = session.data.images, 0
    assert session.eval_config is not None
    base = co_section.second_view(images, session.eval_config.augment, seed)
    changed = [k for k, v in AUGMENT.items()
               if not np.allclose(base, co_section.second_view(
                   images, dataclasses.replace(session.eval_config.augment, **{k: v}), seed))]
    assert {"c_min", "c_max", "brightness", "contrast", "jitter_p", "solarize_p"} <= set(changed), changed


#: the robustness sweeps' settings (besides the images and the model, which are hashed into every key)
SWEEP_BASE = ["internal_corruption.kinds=[mask]", "internal_corruption.strengths=[0.5]", "robustness.eps=[2]",
              "robustness.attacks=[fgsm,pgd]", "robustness.pgd_steps=2", "robustness.corruptions=[gaussian_noise]",
              "robustness.severities=[3]", "robustness.workers=1"]
SWEEP_CHANGES = ["seed=1", "batch_size=3", "robustness.pgd_steps=1", "robustness.min_size=64",
                 "internal_corruption.layer=backbone.layer2"]


def _accuracies(session: Session, store: Path, overrides: list[str]) -> np.ndarray:
    from cossl_analysis.report.sweeps import run_sweeps

    cfg = load_analysis_config([*BASE, *SWEEP_BASE, *overrides])
    result = run_sweeps(session.models, session.data, cfg, ResultStore(store),
                        ("internal_corruption", "adversarial", "corruption"), progress=False)
    return np.array([r["accuracy"] for r in result.records])


@pytest.mark.parametrize("change", SWEEP_CHANGES)
def test_a_changed_sweep_setting_is_recomputed_not_read_stale(change: str, session: Session, tmp_path: Path) -> None:
    shared = tmp_path / "shared.json"
    _accuracies(session, shared, [])
    np.testing.assert_allclose(_accuracies(session, shared, [change]),
                               _accuracies(session, tmp_path / "fresh.json", [change]), err_msg=change)


def test_the_sweep_test_is_not_vacuous(session: Session, tmp_path: Path) -> None:
    """The seed (masks, PGD's start, the corruption's noise) changes some of these accuracies."""
    base = _accuracies(session, tmp_path / "a.json", [])
    assert (_accuracies(session, tmp_path / "b.json", ["seed=1"]) != base).any()
