"""The shipped experiment configs: they load, say what their comments say, and build their model.

Full-size models are only built on the ``meta`` device (shapes, no memory, no compute); the
forward/backward check runs each config's model at width 8 on 32 px inputs, so no ResNet-50
forward ever runs at full size on the CPU.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import flat_config, leaves

from cossl_train.backbones import backbone_info
from cossl_train.config import Config, apply_overrides, load_config, to_dict
from cossl_train.data import read_class_list
from cossl_train.methods import build_method

CONFIG_DIR = Path(str(resources.files("cossl_train") / "configs"))
ALL_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))

#: the documented values of each paper config (dotted key -> value after loading)
EXPECTED: dict[str, dict[str, Any]] = {
    "demo.yaml": {
        "data.dataset": "scenes", "data.scenes_size": 32, "augment.resolution": 24, "augment.c_min": 0.2,
        "augment.blur_p": (0.0, 0.0), "augment.hue": 0.0, "augment.saturation": 0.0, "augment.grayscale_p": 0.0,
        "backbone.name": "rf_resnet18_rf13", "backbone.width": 16, "backbone.pool_mlp": False,
        "method.name": "co_simclr", "co.local_weight": 0.3, "co.direction": "both", "co.shared_heads": False,
        "co.local_targets": "local_heads", "train.online_probe": False, "train.probe_input": "clean",
        "train.epochs": 8, "train.batch_size": 128, "optim.name": "adamw", "optim.lr": 2.0e-3,
    },
    # docs/findings.md's study cell: the demo's values but these (test_demo.py holds that nothing else differs)
    "study.yaml": {
        "data.dataset": "scenes", "augment.resolution": 32, "augment.c_min": 0.2,
        "backbone.name": "rf_resnet18_rf29", "backbone.width": 16, "method.name": "co_simclr",
        "co.local_weight": 0.3, "train.epochs": 24, "train.keep_epochs": (8,), "train.batch_size": 128,
    },
    "imagenet1k_co_byol_r50.yaml": {
        "method.name": "co_byol", "backbone.name": "resnet50", "backbone.small_image": None,
        "backbone.width": 64, "train.epochs": 100, "train.batch_size": 256, "train.precision": "bf16",
        "train.channels_last": True, "augment.resolution": 224, "augment.c_min": 0.08,
        "data.dataset": "imagefolder", "data.root": "/path/to/imagenet/train",
        "data.val_root": "/path/to/imagenet/val", "data.class_list": None,
        "optim.name": "lars", "optim.lr": 0.2, "optim.lr_scaling": "linear", "optim.weight_decay": 1.5e-6,
        "optim.warmup_epochs": 10, "method.ema_base": 0.99, "head.proj_hidden": 4096, "head.proj_dim": 256,
        "head.pred_hidden": 4096, "co.local_weight": 0.3, "co.direction": "both",
    },
    "imagenet1k_byol_r50.yaml": {
        "method.name": "byol", "backbone.name": "resnet50", "train.epochs": 100, "train.batch_size": 256,
        "train.precision": "bf16", "train.channels_last": True, "augment.resolution": 224,
        "augment.c_min": 0.08, "data.dataset": "imagefolder", "optim.name": "lars", "optim.lr": 0.2,
    },
    "imagenet100_grid.yaml": {
        "method.name": "co_byol", "backbone.name": "resnet50", "data.dataset": "imagefolder",
        "data.class_list": "imagenet100", "augment.resolution": 224, "train.epochs": 200,
        "train.precision": "bf16", "train.channels_last": True, "optim.name": "lars", "optim.lr": 0.5,
        "optim.lars_eta": 0.02, "optim.lars_clip": True, "optim.weight_decay": 1e-6, "optim.warmup_epochs": 10,
    },
    "cifar10_co_byol_r18.yaml": {
        "method.name": "co_byol", "backbone.name": "resnet18", "backbone.small_image": True,
        "augment.resolution": 32, "augment.c_min": 0.08, "augment.blur_p": (0.0, 0.0),
        "data.dataset": "cifar10", "data.download": False, "train.epochs": 200, "optim.lr": 1.0,
    },
    "cifar10_byol_r18.yaml": {
        "method.name": "byol", "backbone.name": "resnet18", "backbone.small_image": True,
        "augment.resolution": 32, "data.dataset": "cifar10", "train.epochs": 200,
    },
    # the paper's ImageNet-1K setting: RF99-ResNet-50 with its pool MLP, 100 epochs, w_s in range
    "imagenet1k_co_byol_rf99.yaml": {
        "method.name": "co_byol", "backbone.name": "rf_resnet50_rf99", "backbone.pool_mlp": None,
        "co.local_weight": 0.3, "co.direction": "both", "train.epochs": 100, "augment.resolution": 224,
        "optim.name": "lars", "optim.lr": 0.2, "optim.weight_decay": 1.5e-6, "train.precision": "bf16",
    },
    "imagenet1k_byol_rf99.yaml": {"method.name": "byol", "backbone.name": "rf_resnet50_rf99", "train.epochs": 100},
    "imagenet1k_byol_multicrop_rf99.yaml": {
        "method.name": "byol", "backbone.name": "rf_resnet50_rf99", "augment.local_crops": 8,
        "augment.local_crop_scale": (0.05, 0.14), "augment.local_resolution": 0, "augment.c_min": 0.08,
    },
    "imagenet1k_co_dino_rf99.yaml": {
        "method.name": "co_dino", "backbone.name": "rf_resnet50_rf99", "optim.name": "sgd", "optim.lr": 0.03,
        "optim.weight_decay": 1e-4, "optim.clip_grad": 3.0, "method.ema_base": 0.996, "method.dino.out_dim": 65536,
        "method.dino.teacher_temp": 0.04, "method.dino.student_temp": 0.1, "augment.local_crops": 8,
        "augment.c_min": 0.14, "head.proj_hidden": 2048, "train.batch_size": 64,
    },
    "imagenet1k_dino_rf99.yaml": {"method.name": "dino", "backbone.name": "rf_resnet50_rf99", "optim.name": "sgd"},
    "imagenet1k_co_mocov3_rf99.yaml": {
        "method.name": "co_mocov3", "backbone.name": "rf_resnet50_rf99", "optim.name": "lars", "optim.lr": 0.6,
        "optim.weight_decay": 1e-6, "method.mocov3.temperature": 1.0, "method.ema_base": 0.99, "augment.c_min": 0.2,
    },
    # MoCo-v3's published ResNet-50 commands all pass --crop-min=.2
    "imagenet1k_mocov3_rf99.yaml": {"method.name": "mocov3", "backbone.name": "rf_resnet50_rf99", "optim.lr": 0.6,
                                    "augment.c_min": 0.2},
    "tinyimagenet_co_byol_rf29.yaml": {
        "method.name": "co_byol", "backbone.name": "rf_resnet18_rf29", "data.dataset": "tinyimagenet",
        "augment.resolution": 64, "co.local_weight": 0.3, "train.epochs": 200,
    },
    "tinyimagenet_byol_rf29.yaml": {"method.name": "byol", "backbone.name": "rf_resnet18_rf29",
                                    "data.dataset": "tinyimagenet"},
}

#: (baseline, CO) pairs that must differ only in the method and the output folder
PAIRS = [("imagenet1k_byol_r50.yaml", "imagenet1k_co_byol_r50.yaml"),
         ("cifar10_byol_r18.yaml", "cifar10_co_byol_r18.yaml"),
         ("imagenet1k_byol_rf99.yaml", "imagenet1k_co_byol_rf99.yaml"),
         ("imagenet1k_dino_rf99.yaml", "imagenet1k_co_dino_rf99.yaml"),
         ("imagenet1k_mocov3_rf99.yaml", "imagenet1k_co_mocov3_rf99.yaml"),
         ("tinyimagenet_byol_rf29.yaml", "tinyimagenet_co_byol_rf29.yaml")]


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_paper_config_is_shipped_and_documented() -> None:
    assert set(EXPECTED) <= set(ALL_CONFIGS), sorted(set(EXPECTED) - set(ALL_CONFIGS))
    # a config added later must also get its documented values here
    assert set(ALL_CONFIGS) - set(EXPECTED) == {"demo_digits.yaml"}


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_config_loads_without_unknown_keys(name: str) -> None:
    cfg = load_config(CONFIG_DIR / name)  # refuses unknown keys and wrong types
    assert isinstance(cfg, Config) and is_dataclass(cfg)
    # and every top-level section of the file is a real one
    raw = yaml.safe_load((CONFIG_DIR / name).read_text())
    assert set(raw) <= {f.name for f in fields(Config)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_values_are_as_documented(name: str) -> None:
    cfg = load_config(CONFIG_DIR / name)
    for key, want in EXPECTED[name].items():
        got = _get(cfg, key)
        if isinstance(got, tuple):
            got = tuple(got)
        assert got == want, f"{name}: {key} = {got!r}, documented {want!r}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_names_only_what_differs_from_the_defaults(name: str) -> None:
    """A key set to its config.py default belongs in the file's comments, not in its body."""
    defaults = flat_config(Config())
    named = leaves(yaml.safe_load((CONFIG_DIR / name).read_text()))
    for key, value in named.items():
        default = defaults[key]
        if isinstance(default, tuple):
            default, value = list(default), list(value)
        assert value != default, f"{name} names {key}={value!r}, which is config.py's default"


@pytest.mark.parametrize(("base", "co"), PAIRS)
def test_baseline_and_co_configs_differ_only_by_the_method(base: str, co: str) -> None:
    a, b = flat_config(load_config(CONFIG_DIR / base)), flat_config(load_config(CONFIG_DIR / co))
    diff = {k for k in a if a[k] != b[k]}
    assert diff == {"method.name", "train.out_dir"}, diff
    assert b["method.name"] == f"co_{a['method.name']}"


def test_multicrop_baseline_changes_only_the_small_crops() -> None:
    a = flat_config(load_config(CONFIG_DIR / "imagenet1k_byol_rf99.yaml"))
    b = flat_config(load_config(CONFIG_DIR / "imagenet1k_byol_multicrop_rf99.yaml"))
    diff = {k for k in a if a[k] != b[k]}
    assert diff == {"augment.local_crops", "train.out_dir"}, diff
    dino = load_config(CONFIG_DIR / "imagenet1k_dino_rf99.yaml").augment
    assert b["augment.local_crops"] == dino.local_crops  # the same source's count


def test_output_folders_are_distinct() -> None:
    outs = [load_config(CONFIG_DIR / n).train.out_dir for n in ALL_CONFIGS]
    assert len(set(outs)) == len(outs), outs


def test_imagenet100_class_list_has_100_classes() -> None:
    names = read_class_list(load_config(CONFIG_DIR / "imagenet100_grid.yaml").data.class_list)
    assert len(names) == 100 and all(n.startswith("n") for n in names)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_full_size_model_builds_on_meta(name: str) -> None:
    """The real model, shapes only: features and parameter count match the backbone registry."""
    cfg = load_config(CONFIG_DIR / name)
    with torch.device("meta"):
        method = build_method(cfg)
    info = backbone_info(cfg.backbone.name, cfg.backbone.small_image, width=cfg.backbone.width)
    assert method.encoder.num_features == info["num_features"]
    pool_mlp = info["pool_mlp"] if cfg.backbone.pool_mlp is None else cfg.backbone.pool_mlp
    assert sum(p.numel() for p in method.encoder.parameters()) == info["params"] + pool_mlp * info["pool_mlp_params"]
    assert (method.co is not None) == cfg.method.name.startswith("co_")
    if cfg.backbone.name == "resnet50" and cfg.backbone.width == 64:
        assert info["num_features"] == 2048 and info["rf"] == 427
        assert info["feature_size"] == 7  # 7 x 7 local representations at 224 px


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_model_trains_one_step_at_width_8(name: str) -> None:
    """Each config's model, narrowed to width 8 and fed 32 px images, gives a finite loss and
    gradients (heads shrunk too, so the check stays well under a second)."""
    cfg = apply_overrides(load_config(CONFIG_DIR / name), [
        "backbone.width=8", "head.proj_hidden=32", "head.proj_dim=16", "head.pred_hidden=32",
        "co.proj_hidden=16", "co.pred_hidden=16"])
    torch.manual_seed(0)
    method = build_method(cfg)
    views = [torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)]
    views += [torch.rand(4, 3, 16, 16) for _ in range(cfg.augment.local_crops)]  # multi-crop's small views
    out = method(views)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for p in method.encoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if cfg.method.name.startswith("co_"):
        assert out.loss_local > 0


def test_every_config_key_has_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    """``cossl-train config --explain``: one line per key of the config, value and description, the
    descriptions read from the ``#:`` comment above each field (so a new field without one fails here)."""
    from cossl_train.cli import main
    from cossl_train.config_help import describe

    def leaves(d: dict, prefix: str = "") -> list[str]:
        return [k for key, v in d.items() for k in (leaves(v, f"{prefix}{key}.") if isinstance(v, dict) and v
                                                     else [f"{prefix}{key}"])]

    rows = describe()
    assert [key for key, _, _ in rows] == leaves(to_dict(Config()))  # every key, in the config's order
    assert not [key for key, _, text in rows if not text]
    texts = {k: t for k, _, t in rows}
    assert texts["augment.jitter_p"] == "probability that a view is colour-jittered (BYOL: 0.8)"
    assert main(["config", "--explain", "train.epochs=5", "method.name=simclr"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rows)
    epochs = next(line for line in lines if line.startswith("train.epochs="))
    assert epochs.split() == ["train.epochs=5", "pre-training", "epochs"]
    assert any(line.startswith("method.simclr.temperature=0.2 ") and "NT-Xent" in line for line in lines)
    import doctest

    import cossl_train.config_help

    assert doctest.testmod(cossl_train.config_help).failed == 0
