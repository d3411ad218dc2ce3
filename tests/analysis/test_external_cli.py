"""External models through the command line and the report: torchvision ResNet-18 and ResNet-50
(random weights saved as a state_dict) through every command and next to a cossl checkpoint, a
timm ResNet and a tiny timm ViT, the bad specs (one line each, exit 2), and the Python API
(``from_module`` + one function per analysis) giving the command's numbers on the same images.

Tiny on purpose: a 3-class image folder, 64 px evaluation images (a 2x2 map for the ResNets),
8 images, one corruption, one budget; the probes are trained once per model and reused."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
import torchvision
from conftest import random_image_folder

from cossl_analysis import (
    adversarial_sweep,
    corruption_sweep,
    erf_map,
    from_module,
    internal_corruption_sweep,
    patch_drop_analysis,
    similarity_analysis,
)
from cossl_analysis.cli import main
from cossl_analysis.registry import commands
from cossl_analysis.report import load_eval_set
from cossl_train.config import load_config

SMALL = ["images=8", "erf.images=1", "erf.show=1", "robustness.corruptions=[gaussian_noise]",
         "robustness.severities=[1]", "robustness.eps=[1]", "robustness.pgd_steps=1", "robustness.workers=1",
         "internal_corruption.kinds=[mask]", "internal_corruption.strengths=[0,0.5]", "eval.linear_epochs=2",
         "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("external_cli")
    random_image_folder(root / "train", classes=("a", "b", "c"), per_class=8, size=24)
    random_image_folder(root / "val", classes=("a", "b", "c"), per_class=3, size=24, seed=1)
    weights = {}
    for arch in ("resnet18", "resnet50"):
        torch.manual_seed(0)
        weights[arch] = root / f"{arch}.pth"
        torch.save(torchvision.models.get_model(arch).state_dict(), weights[arch])
    torch.manual_seed(0)
    weights["timm_resnet18"] = root / "timm_r18.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), weights["timm_resnet18"])
    (root / "tinyvit.py").write_text(
        "import timm\nimport torch\n\n\ndef build():\n"
        "    torch.manual_seed(0)\n"
        "    vit = timm.create_model('vit_tiny_patch16_224', img_size=32, depth=2, num_classes=0)\n"
        "    with torch.no_grad():  # LayerNorm gains other than 1, so that ERFs are not zero\n"
        "        for m in vit.modules():\n"
        "            if isinstance(m, torch.nn.LayerNorm):\n"
        "                m.weight.uniform_(0.5, 1.5)\n"
        "    return vit\n")
    data = ["data.dataset=imagefolder", f"data.root={root / 'train'}", f"data.val_root={root / 'val'}",
            "data.num_workers=0"]
    return {"root": root, "weights": weights, "data": data}


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _manifest(out: Path, command: str) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())["commands"][command]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_resnet_through_every_command(arch: str, files: dict[str, Any], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"torchvision:{arch}@{files['weights'][arch]}"
    out = tmp_path / "out"
    for command in commands():
        code, err = _run(capsys, command, spec, "--out", out, *files["data"], "external.resolution=64",
                         "train_probe=all", *SMALL)
        assert code == 0, (command, err)
        assert (out / f"{command}.html").is_file()
        (model,) = _manifest(out, command)["models"]
        assert model["kind"] == "external" and model["checkpoint"] == spec
        assert "2x2 at 64 px; global = spatial mean of the map" in model["representations"]
    html = (out / "report.html").read_text()
    assert f"{spec}: local = input of &#39;avgpool&#39;" in html  # the encoder's description, in the models table
    assert "External models have no heads" in html and "External models have no pre-training crop" in html
    assert len(list((out / "probes").glob("*.probe.pt"))) == 1  # trained once, reused by every command


def test_report_of_an_external_model_next_to_a_cossl_checkpoint(files: dict[str, Any], tiny_checkpoints: dict,
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"torchvision:resnet18@{files['weights']['resnet18']}"
    out = tmp_path / "out"
    code, err = _run(capsys, "report", tiny_checkpoints["co_byol"], spec, "--labels", "CO-BYOL,R18", "--out", out,
                     *files["data"], "augment.resolution=64", "train_probe=all", *SMALL)
    assert code == 0, err
    record = _manifest(out, "report")
    assert [(m["label"], m["kind"]) for m in record["models"]] == [("CO-BYOL", "cossl"), ("R18", "external")]
    assert {m["probe_kind"] for m in record["models"]} == {"linear probe (fast protocol)"}
    assert record["evaluation"]["resolution"] == 64 and record["evaluation"]["num_classes"] == 3
    pearson = [r for r in record["paired"] if r["metric"] == "Pearson C"]
    assert [(r["a"], r["b"], r["why"]) for r in pearson] == [("R18", "CO-BYOL", "against the first group")]
    assert "paired by order" in pearson[0]["note"]
    html = (out / "report.html").read_text()
    assert "left out: R18" in html and "2x2 at 64 px" in html


def test_a_timm_resnet_and_a_tiny_timm_vit(files: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(files["root"])  # MODULE:FUNCTION finds ./tinyvit.py
    timm_spec = f"timm:resnet18@{files['weights']['timm_resnet18']}"
    for spec, extra, global_text in ((timm_spec, ["external.resolution=64"], "spatial mean of the map"),
                                     ("tinyvit:build", ["external.global_pool=mean"], "mean of the patch tokens")):
        out = tmp_path / spec.split(":")[0]
        for command in ("similarity", "erf", "patch-drop"):
            code, err = _run(capsys, command, spec, "--out", out, *files["data"], *extra, "patch_drop.accuracy=false",
                             *SMALL)
            assert code == 0, (spec, command, err)
        (model,) = _manifest(out, "similarity")["models"]
        assert model["representations"].endswith(f"global = {global_text}")
        erf = json.loads((out / "erf/erf.json").read_text())
        assert all(p["total"] > 0 for label in erf for p in erf[label]["positions"])
    vit = _manifest(tmp_path / "tinyvit", "similarity")["models"][0]["representations"]
    assert "patch tokens of forward_features (class token dropped), 192 channels, 2x2 at 32 px" in vit
    # the class token cannot be re-pooled from kept positions: the model is left out, with the setting that would do
    code, err = _run(capsys, "patch-drop", "tinyvit:build", "--out", tmp_path / "token", *files["data"],
                     "patch_drop.accuracy=false", *SMALL)
    assert code == 0, err
    html = (tmp_path / "token" / "patch-drop.html").read_text()
    assert "Left out: tinyvit:build (class token)" in html and "external.global_pool=mean analyses" in html
    assert not (tmp_path / "token" / "patch_drop" / "patch_drop.json").exists()


def test_every_result_file_says_where_the_weights_came_from(files: dict[str, Any], tiny_checkpoints: dict,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    weights = files["weights"]["resnet18"]
    spec = f"torchvision:resnet18@{weights}"
    out = tmp_path / "out"
    for command in ("similarity", "erf"):
        code, err = _run(capsys, command, tiny_checkpoints["byol"], spec, "--labels", "BYOL,R18", "--out", out,
                         *files["data"], "augment.resolution=64", *SMALL)
        assert code == 0, err
    records = {m["label"]: m["provenance"] for m in _manifest(out, "similarity")["models"]}
    r18, byol = records["R18"], records["BYOL"]
    assert r18["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert r18["pretrained"] == "torchvision weights=None (nothing downloaded)"
    trunk = [k for k in torchvision.models.resnet18().state_dict() if not k.startswith("fc.")]
    assert r18["loaded"] == r18["architecture_keys"] == len(trunk) and r18["missing"] == []
    assert r18["dropped"] == {"fc": 2} and r18["weights"] == str(weights.resolve())
    checkpoint = Path(tiny_checkpoints["byol"])
    assert byol["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest() and byol["missing"] == []
    assert "cossl-train pretrain, epoch 3" in byol["pretrained"]
    written = [p for p in out.rglob("*.json") if p.name not in ("manifest.json", "cells.json")]
    assert {p.name for p in written} == {"similarity.json", "erf.json"}
    for path in written:  # both records, at the top or (a file keyed by label) under each model's own
        data = json.loads(path.read_text())
        found = data.get("provenance") or {label: data[label]["provenance"] for label in ("BYOL", "R18")}
        assert found == records, path
    html = (out / "similarity.html").read_text()
    assert f"sha256 {r18['sha256'][:12]}" in html and f"sha256 {byol['sha256'][:12]}" in html


def test_the_zero_erf_of_a_fresh_vit_is_explained(files: dict[str, Any], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "freshvit.py").write_text(
        "import timm\n\n\ndef build():\n"
        "    return timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, depth=1, num_classes=0)\n")
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, "erf", "freshvit:build", "--out", tmp_path / "out", *files["data"], *SMALL)
    assert code == 0, err
    (record,) = json.loads((tmp_path / "out/erf/erf.json").read_text()).values()
    # a fresh final LayerNorm (gain 1, bias 0): every position's channels sum to 0, whatever the image
    assert max(p["total"] for p in record["positions"]) < 1e-3
    assert "the channel sum of its local representations is the same for every input" in record["note"]
    assert "randomly initialised ViT" in (tmp_path / "out/erf.html").read_text()


BAD = {
    "unknown library": ("hf:facebook/dino-vitb16", [], "unknown library 'hf'"),
    "unknown torchvision model": ("torchvision:resnet5", [], "unknown torchvision model 'resnet5'"),
    "unknown timm model": ("timm:resnet_nope", [], "unknown timm model 'resnet_nope'"),
    "missing weights file": ("torchvision:resnet18@{root}/nope.pth", [], "does not exist"),
    "weights that do not fit": ("torchvision:resnet50@{resnet18}", [], "do not fit torchvision:resnet50"),
    "a layer that does not exist": ("torchvision:resnet18", ["external.layer=layer9"], "layer 'layer9' does not exist"),
    "a layer whose output is not 4-D": ("timm:resnet18", ["external.layer=global_pool"],
                                        "gives (1, 512), not a (B, C, h, w)"),
    "a class token a CNN has not": ("torchvision:resnet18", ["external.global_pool=token"], "needs a class token"),
    "an unknown global pool": ("torchvision:resnet18", ["external.global_pool=max"], "is not one of mean, token"),
    "a callable returning no module": ("os:getcwd", [], "returned a str, not an nn.Module"),
    "a wrong normalisation": ("torchvision:resnet18", ["external.mean=[0.5,0.5]"], "external.mean needs 3 values"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_specs_are_one_line_and_exit_2(case: str, files: dict[str, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    spec, extra, piece = BAD[case]
    spec = spec.format(root=files["root"], resnet18=files["weights"]["resnet18"])
    out = tmp_path / "out"
    code, err = _run(capsys, "similarity", spec, "--out", out, *extra, "external.resolution=64", *files["data"],
                     "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("cossl-analysis: error: ") and piece in lines[0], lines[0]
    assert not (out / "cells.json").exists()


def test_from_module_gives_the_commands_numbers(files: dict[str, Any], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"torchvision:resnet18@{files['weights']['resnet18']}"
    out = tmp_path / "out"
    label = "torchvision:resnet18"
    rows: list[dict[str, str]] = []
    for command in ("similarity", "erf", "patch-drop", "internal-corruption", "corruption", "adversarial"):
        code, err = _run(capsys, command, spec, "--out", out, *files["data"], "external.resolution=64",
                         "train_probe=all", *SMALL)
        assert code == 0, (command, err)
        if (out / "robustness/robustness.csv").is_file():  # each command writes the points it read
            with open(out / "robustness/robustness.csv", newline="") as handle:
                rows += [r for r in csv.DictReader(handle) if r["label"] == label]
    # the same network and images, through the Python API
    net = torchvision.models.resnet18()
    net.load_state_dict(torch.load(files["weights"]["resnet18"], weights_only=True))
    enc = from_module(net, resolution=64)
    data = load_eval_set(load_config(None, [*files["data"], "augment.resolution=64"]), 8, progress=False)
    (probe_file,) = (out / "probes").glob("*.probe.pt")
    weight = torch.load(probe_file, weights_only=True)["probe"]
    probe = torch.nn.Linear(weight["weight"].shape[1], weight["weight"].shape[0])
    probe.load_state_dict(weight)

    sim = json.loads((out / "similarity/similarity.json").read_text())[label]
    assert similarity_analysis(enc, data.images).pearson_c == pytest.approx(sim["pearson_c"], abs=1e-9)
    drop = json.loads((out / "patch_drop/patch_drop.json").read_text())["per_checkpoint"][label]
    mine = patch_drop_analysis(enc, data.images, probe=probe, labels=data.labels)
    assert mine.cosine_mean == pytest.approx(drop["cosine_mean"], abs=1e-6) and mine.accuracy == drop["accuracy"]
    maps = np.load(out / "erf" / "torchvision_resnet18_maps.npy")
    np.testing.assert_allclose(erf_map(enc, data.images[:1], average=False), maps, rtol=1e-5, atol=1e-8)

    def csv_accuracy(sweep: str, setting: str, column: str, level: str) -> float:
        (value,) = {r["accuracy"] for r in rows if r["sweep"] == sweep and r["setting"] == setting
                    and r[column] == level}
        return float(value)

    internal = internal_corruption_sweep(enc, probe, data.images, data.labels, "net.layer3", "mask", [0.5])
    assert internal.accuracy == [csv_accuracy("internal_corruption", "mask", "strength", "0.5")]
    corrupted = corruption_sweep(enc, probe, data.images, data.labels, ["gaussian_noise"], [1], workers=1)
    assert corrupted.corruption["gaussian_noise"][1] == csv_accuracy("corruption", "gaussian_noise", "severity", "1")
    attacked = adversarial_sweep(enc, probe, data.images, data.labels, eps_255=[1.0], steps=1)
    for attack in ("fgsm", "pgd"):
        assert attacked.accuracy[attack] == [csv_accuracy("adversarial", attack, "eps_255", "1.0")]
    assert attacked.clean == corrupted.clean == csv_accuracy("clean", "clean", "sweep", "clean")
