"""Probes in a comparison: every table, file and manifest names the probe actually used; probes of
different kinds are refused unless asked for; train_probe trains by cossl-train linear-probe's own
recipe, for the models without one or for all."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from cossl_analysis.cli import main
from cossl_train.checkpoint import load_pretrained, save_probe
from cossl_train.config import apply_overrides
from cossl_train.evaluate import evaluate_encoder

FAST = ["images=16", "robustness.sweeps=[internal_corruption]", "internal_corruption.kinds=[mask]",
        "internal_corruption.strengths=[0,0.5]", "robustness.workers=1", "--no-progress"]


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def _manifest(out: Path, command: str) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())["commands"][command]


def test_a_rejected_offline_probe_is_named_as_the_online_one_everywhere(tiny_checkpoints: dict, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A .probe.pt beside the checkpoint that the loader rejects (trained on other weights) must not make
    any table say 'offline': the accuracies are the online probe's."""
    ckpt = _copy(tiny_checkpoints["byol"], tmp_path / "run" / "checkpoint.pt")
    pre = load_pretrained(ckpt)
    other = torch.nn.Conv2d(1, 1, 1)  # another encoder: its hash does not match
    save_probe(ckpt, torch.nn.Linear(pre.encoder.num_features, 10), other, pre.epoch, {"dataset": "digits"}, "fast",
               {"linear_top1": 50.0, "linear_top5": 90.0})
    out = tmp_path / "out"
    assert main(["robustness", str(ckpt), "--out", str(out), *FAST]) == 0, capsys.readouterr().err
    (model,) = _manifest(out, "robustness")["models"]
    assert model["probe_kind"] == "online probe" and model["probe"].startswith("online probe")
    with open(out / "robustness" / "robustness.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {r["probe"] for r in rows} == {"online probe"}
    html = (out / "robustness.html").read_text()
    assert "offline linear probe" not in html
    # the summary, the internal-corruption and the large-crop tables each name it in a probe column
    assert html.count("<th>probe</th>") >= 3 and html.count("<td>online probe</td>") >= 3


def test_probes_of_different_kinds_are_refused_unless_asked_for(tiny_checkpoints: dict, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    offline = _copy(tiny_checkpoints["co_byol"], tmp_path / "offline" / "checkpoint.pt")
    pre = load_pretrained(offline)
    torch.manual_seed(0)
    save_probe(offline, torch.nn.Linear(pre.encoder.num_features, 10), pre.encoder, pre.epoch,
               {"dataset": "digits"}, "fast", {"linear_top1": 50.0, "linear_top5": 90.0})
    assert load_pretrained(offline).probe_source.startswith("offline")
    out = tmp_path / "out"
    args = ["internal-corruption", str(tiny_checkpoints["byol"]), str(offline), "--out", str(out), *FAST]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "probes of different kinds" in line and "BYOL: online probe" in line
    assert "CO-BYOL: linear probe (fast protocol)" in line and "train_probe=all" in line and "mixed_probes=true" in line
    assert not (out / "cells.json").exists()
    assert main([*args, "mixed_probes=true"]) == 0, capsys.readouterr().err
    kinds = [m["probe_kind"] for m in _manifest(out, "internal-corruption")["models"]]
    assert kinds == ["online probe", "linear probe (fast protocol)"]


def test_train_probe_all_uses_the_linear_probe_recipe_for_every_model(tiny_checkpoints: dict, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """train_probe=all replaces the online probes too, each with exactly the probe `cossl-train
    linear-probe` would train under the same eval.* settings (a non-default momentum included)."""
    recipe = ["eval.linear_epochs=3", "eval.linear_momentum=0.5", "eval.linear_lr=0.05"]
    out = tmp_path / "out"
    ckpts = [str(tiny_checkpoints["byol"]), str(tiny_checkpoints["co_byol"])]
    assert main(["internal-corruption", *ckpts, "--out", str(out), "train_probe=all", *recipe, *FAST]) == 0, (
        capsys.readouterr().err)
    models = _manifest(out, "internal-corruption")["models"]
    assert [m["probe_kind"] for m in models] == ["linear probe (fast protocol)"] * 2
    stored = {p.name: torch.load(p, weights_only=True) for p in (out / "probes").glob("*.probe.pt")}
    assert len(stored) == 2
    for m, path in zip(models, ckpts, strict=True):
        pre = load_pretrained(path)
        cfg = apply_overrides(pre.config, recipe)
        expected = evaluate_encoder(pre.encoder, cfg, linear=True, knn=True, progress=False)
        (mine,) = [s for name, s in stored.items() if name in m["probe"]]
        assert torch.equal(mine["probe"]["weight"], expected["probe"].weight)
        assert torch.equal(mine["probe"]["bias"], expected["probe"].bias)
        assert mine["knn_top1"] == expected["knn_top1"] and mine["n_val"] == expected["n_val"]
    html = (out / "internal-corruption.html").read_text()
    assert "kNN top-1, full evaluation split (%)" in html  # measured while training the probes
