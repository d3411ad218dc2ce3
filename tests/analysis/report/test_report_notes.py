"""What a run must tell its reader: an undefined Pearson C is null with its reason (never NaN in a
JSON file, never "nan" on the page), every JSON file of a run is valid JSON, fewer images than asked
and the embedded-scenes fallback of external models are said on stderr, on the page and in the
manifest."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from cossl_analysis import similarity_from_features
from cossl_analysis.cli import main
from cossl_analysis.report import save_similarity

QUIET = ["--no-progress", "robustness.workers=1"]
#: a network whose feature map is the same for every image: every similarity is 1, C is undefined
CONSTANT = (
    "import torch\n\n\ndef build():\n"
    "    net = torch.nn.Conv2d(3, 4, 8, stride=8)\n"
    "    torch.nn.init.zeros_(net.weight)\n"
    "    torch.nn.init.ones_(net.bias)\n"
    "    return net\n"
)


def strict_json(path: Path) -> Any:
    """The file as JSON, refusing the NaN and Infinity that Python's json would let through."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_an_undefined_pearson_c_is_null_with_its_reason(tmp_path: Path) -> None:
    torch.manual_seed(0)
    two = similarity_from_features(torch.randn(2, 4), torch.randn(2, 3, 4))  # 2 images: one pair
    assert two.note == "Pearson C needs at least 2 image pairs (3 images); there is 1"
    constant = similarity_from_features(torch.ones(5, 4), torch.randn(5, 3, 4))
    assert constant.note.startswith("the global similarities of all 10 pairs are equal")
    assert similarity_from_features(torch.randn(5, 4), torch.randn(5, 3, 4)).note == ""  # defined: no note
    summary = save_similarity({"const": constant}, tmp_path / "sim.png")["const"]
    assert summary["pearson_c"] != summary["pearson_c"]  # NaN in Python
    written = strict_json(tmp_path / "sim.json")["const"]
    assert written["pearson_c"] is None and written["pearson_c_note"] == constant.note


@pytest.fixture(scope="module")
def constant_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """similarity and patch-drop of a constant external model, twice (the second run reads the store)."""
    root = tmp_path_factory.mktemp("constant")
    (root / "constmodel.py").write_text(CONSTANT)
    out = root / "out"
    argv = [f"{root / 'constmodel.py'}:build", "--out", str(out), "images=6", "external.resolution=16",
            "patch_drop.accuracy=false", *QUIET]
    codes = [main(["similarity", *argv]), main(["patch-drop", *argv]), main(["similarity", *argv])]
    return {"out": out, "codes": codes, "argv": argv, "root": root}


def test_every_json_file_of_a_run_is_valid_and_c_reads_as_undefined(constant_run: dict[str, Any]) -> None:
    out = constant_run["out"]
    assert constant_run["codes"] == [0, 0, 0]
    files = sorted(out.rglob("*.json"))
    assert {p.name for p in files} >= {"similarity.json", "patch_drop.json", "manifest.json", "cells.json"}
    data = {p.name: strict_json(p) for p in files}  # none holds NaN
    (c,) = data["similarity.json"].values()
    assert c["pearson_c"] is None and "are equal (a constant map?)" in c["pearson_c_note"]
    html = (out / "similarity.html").read_text()
    assert "Pearson C is undefined (shown as -, null in the JSON files)" in html and ">nan<" not in html.lower()
    # the store reads its NaN back exactly: the rerun recomputed nothing and says the same
    assert "Results computed in this run: 0" in html and "are equal (a constant map?)" in html


def test_the_embedded_scenes_fallback_is_said(constant_run: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    out, argv = constant_run["out"], constant_run["argv"]
    for page in ("similarity.html", "patch-drop.html"):
        assert "the evaluation images are the package&#39;s embedded digit scenes" in (out / page).read_text()
    notes = json.loads((out / "manifest.json").read_text())["commands"]["similarity"]["notes"]
    assert any("not the data the external models were trained on" in n for n in notes)
    with caplog.at_level(logging.WARNING, logger="cossl_analysis"):
        assert main(["similarity", *argv]) == 0
    assert any("embedded digit scenes" in r.getMessage() for r in caplog.records)  # said on stderr, too
    caplog.clear()
    other = constant_run["root"] / "digits"
    with caplog.at_level(logging.WARNING, logger="cossl_analysis"):
        assert main(["similarity", *argv[:2], str(other), *argv[3:], "data.dataset=digits", "data.digits_size=16",
                     "data.num_workers=0"]) == 0
    assert not any("embedded digit scenes" in r.getMessage() for r in caplog.records)  # data.* given: no note
    assert json.loads((other / "manifest.json").read_text())["commands"]["similarity"]["notes"] == []


def test_fewer_images_than_asked_is_said(tiny_checkpoints: dict, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="cossl_analysis"):
        assert main(["similarity", str(tiny_checkpoints["byol"]), "--out", str(out), "images=100000", *QUIET]) == 0
    record = json.loads((out / "manifest.json").read_text())["commands"]["similarity"]
    n = record["evaluation"]["n_images"]
    assert n == record["evaluation"]["split_size"] < 100000
    (note,) = record["notes"]
    assert note.startswith("images=100000 asked for, but the evaluation split (") and note.endswith(
        f"holds {n}: all {n} are used")
    assert note.replace("'", "&#39;") in (out / "similarity.html").read_text()
    assert any(note in r.getMessage() for r in caplog.records)


def test_fewer_erf_images_than_asked_is_said(tiny_checkpoints: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["erf", str(tiny_checkpoints["byol"]), "--out", str(out), "images=3", "erf.images=16", *QUIET]) == 0
    (note,) = json.loads((out / "manifest.json").read_text())["commands"]["erf"]["notes"]
    assert note == "erf.images=16 asked for, but there are 3 evaluation images: the ERFs are computed on 3"
    assert json.loads((out / "erf/erf.json").read_text())["BYOL"]["num_images"] == 3
