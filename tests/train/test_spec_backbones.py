"""Any backbone in the trainer: ``backbone.name=torchvision:NAME`` / ``timm:NAME`` /
``MODULE:FUNCTION`` trains through the command line, its checkpoint loads back (resume,
linear-probe, knn) and goes through ``cossl-analysis report``; a spec that cannot be used is one
line and exit status 2, before any training step, with nothing written over.

Tiny on purpose: 64 digits, one optimizer step of 8 images, a one-block ViT with 8 px patches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

from cossl_analysis.cli import main as analysis_main
from cossl_train.checkpoint import load_pretrained
from cossl_train.cli import main as train_main
from cossl_train.config import load_config

SMALL = ["data.dataset=digits", "data.digits_size=32", "data.num_workers=0", "data.limit=64",
         "augment.resolution=32", "head.proj_hidden=32", "head.proj_dim=16", "head.pred_hidden=32",
         "co.proj_hidden=16", "co.pred_hidden=16", "optim.name=adamw", "optim.lr=1e-3", "optim.lr_scaling=none",
         "optim.warmup_epochs=0", "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=1",
         "train.probe_eval_every=0", "train.tensorboard=false", "train.precision=fp32"]
VIT = ["backbone.name=timm:vit_tiny_patch16_224", "backbone.kwargs.img_size=32", "backbone.kwargs.patch_size=8",
       "backbone.kwargs.depth=1"]
REPORT = ["images=16", "erf.images=1", "erf.show=1", "robustness.sweeps=[]", "--no-progress"]


def _pretrain(out: Path, *overrides: str, resume: bool = False) -> int:
    return train_main(["pretrain", *(["--resume"] if resume else []), "--no-progress", *SMALL, *overrides,
                       f"train.out_dir={out}"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("spec_runs")
    assert _pretrain(root / "resnet18", "backbone.name=torchvision:resnet18", "method.name=co_byol") == 0
    assert _pretrain(root / "vit", *VIT, "method.name=co_simclr") == 0
    return {"resnet18": root / "resnet18", "vit": root / "vit"}


def test_checkpoints_load_back_with_the_models_own_global(runs: dict[str, Path]) -> None:
    vit = load_pretrained(runs["vit"] / "checkpoint.pt")
    assert vit.config.backbone.kwargs == {"img_size": 32, "patch_size": 8, "depth": 1}
    net = vit.encoder.backbone.net
    assert isinstance(net, timm.models.VisionTransformer)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        fmap, h = vit.encoder.encode(x)
        tokens = net.forward_features(vit.encoder.normalize(x))
    assert fmap.shape == (3, 192, 4, 4) and torch.equal(fmap.flatten(2).transpose(1, 2), tokens[:, 1:])
    assert torch.equal(h, net.forward_head(tokens, pre_logits=True))  # the class token
    assert vit.encoder.global_text == "class token"
    r18 = load_pretrained(runs["resnet18"] / "checkpoint.pt")
    assert type(r18.encoder.backbone.net).__name__ == "ResNet" and r18.encoder.num_features == 512
    assert "avgpool" in r18.encoder.backbone.map_text


def test_resume_linear_probe_and_knn(runs: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    run = tmp_path / "vit"
    shutil.copytree(runs["vit"], run)
    # the finished run resumes (the method, its optimizer and RNG states load back) and has nothing left to do
    assert _pretrain(run, *VIT, "method.name=co_simclr", resume=True) == 0
    assert "resumed" in capsys.readouterr().err
    ckpt = str(run / "checkpoint.pt")
    assert train_main(["linear-probe", ckpt, "eval.linear_epochs=1", "--no-progress"]) == 0
    assert train_main(["knn", ckpt, "eval.knn_k=5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "weighted kNN (k=5)" in out


def _report(run: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[dict[str, Any], str]:
    code = analysis_main(["report", str(run), "--out", str(out), *REPORT, *extra])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads((out / "manifest.json").read_text())["commands"]["report"], (out / "report.html").read_text()


def test_report_reads_a_torchvision_resnet18_checkpoint(runs: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # trained at 32 px (a 1x1 map); evaluated at 64 px, where the map has 2x2 positions
    record, html = _report(runs["resnet18"], tmp_path / "report", capsys, "augment.resolution=64")
    (model,) = record["models"]
    assert model["backbone"] == "torchvision:resnet18" and model["method"] == "co_byol"
    assert "input of 'avgpool'" in model["representations"] and "global = spatial mean of the map" in \
        model["representations"]
    assert "Patch dropping" in html and "Left out" not in html


def test_report_reads_a_timm_vit_checkpoint(runs: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    record, html = _report(runs["vit"], tmp_path / "report", capsys)
    (model,) = record["models"]
    assert model["backbone"] == "timm:vit_tiny_patch16_224"
    assert "patch tokens of forward_features (class token dropped)" in model["representations"]
    assert model["representations"].endswith("global = class token")
    # the class token cannot be re-pooled from kept positions: left out of patch dropping, saying why
    assert "Left out: CO-SimCLR (class token)" in html


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("cossl-train: error:"), err
    return err


TOKEN_SHORT = """
import timm


def build():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=0)
    full = vit.forward_features
    vit.forward_features = lambda x: full(x)[:, :-1]  # one patch token short of its grid
    return vit
"""

BAD: dict[str, tuple[list[str], str]] = {
    "unknown timm model": (["backbone.name=timm:no_such_model_xyz"], "unknown timm model 'no_such_model_xyz'"),
    "unknown library": (["backbone.name=hf:facebook/dino"], "unknown library 'hf'"),
    "neither registered nor a spec": (["backbone.name=resnet_nope"], "is not one of resnet18, resnet50, "),
    "weights file": (["backbone.name=timm:resnet18@w.pth"], "drop '@w.pth'"),
    "width with a spec": (["backbone.name=timm:resnet18", "backbone.width=32"],
                          "backbone.width=32 applies to registered backbones"),
    "small_image with a spec": (["backbone.name=timm:resnet18", "backbone.small_image=true"],
                                "backbone.small_image=true applies to registered backbones"),
    "kwargs with a registered name": (["backbone.name=resnet18", "backbone.kwargs.depth=2"],
                                      "backbone.kwargs={'depth': 2} applies to model specs"),
    "no feature map": (["backbone.name=torch.nn:Flatten"], "gives (1, 3072), not a (B, C, h, w) feature map"),
    "ViT at the wrong size": (["backbone.name=timm:vit_tiny_patch16_224", "backbone.kwargs.depth=1"],
                              "cannot run on 32 px images"),
    "tokens off the grid": (["backbone.name=shortvit:build"], "do not fill the 4x4 patch grid"),
    "bad builder keyword": (["backbone.name=timm:resnet18", "backbone.kwargs.no_such_option=1"],
                            "cannot build timm:resnet18"),
    "widths that differ, with the CO term": (["backbone.name=torchvision:mobilenet_v3_small", "method.name=co_byol"],
                                             "needs a backbone whose widths agree"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_backbone_specs_are_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    overrides, piece = BAD[case]
    (tmp_path / "shortvit.py").write_text(TOKEN_SHORT)
    monkeypatch.chdir(tmp_path)  # MODULE:FUNCTION finds ./shortvit.py
    out = tmp_path / "run"
    err = _one_line_exit_2(capsys, _pretrain(out, *overrides))
    assert piece in err
    assert not (out / "checkpoint.pt").exists()


def test_specs_in_yaml_and_the_explicit_module_form(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("backbone:\n  name: module:timm:create_model\n  kwargs:\n    model_name: vit_tiny_patch16_224\n"
                    "    img_size: 32\n    patch_size: 8\n    depth: 1\n    num_classes: 0\n")
    cfg = load_config(path, SMALL)
    assert cfg.backbone.name == "module:timm:create_model" and cfg.backbone.kwargs["img_size"] == 32
    from cossl_train.encoder import build_encoder

    enc = build_encoder(cfg)
    assert enc.num_features == 192 and enc.backbone.map_size == (4, 4) and enc.backbone.global_pool == "token"
