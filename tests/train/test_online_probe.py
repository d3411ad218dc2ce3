"""The online probe: its clean images, that it never touches training, and that it tracks."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import TINY_OVERRIDES

from cossl_train.augment import eval_transform
from cossl_train.checkpoint import load_pretrained
from cossl_train.config import load_config
from cossl_train.data import build_eval_datasets, build_loader, build_pretrain_dataset, collate_skip_none
from cossl_train.trainer import pretrain


def _cfg(tmp: Path, *extra: str):
    return load_config(None, [*TINY_OVERRIDES, "train.epochs=1", "train.max_steps_per_epoch=3",
                              f"train.out_dir={tmp}", *extra])


def test_clean_image_is_the_evaluation_image(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    pre = build_pretrain_dataset(cfg.data, cfg.augment).with_clean(eval_transform(cfg.augment))
    train, _ = build_eval_datasets(cfg.data, cfg.augment)
    for i in (0, 7, 100):
        v1, v2, label, local, clean = pre[(i, 1234)]
        x, y = train[i]
        assert torch.equal(clean, x) and label == y and local == ()
        assert v1.shape == clean.shape and not torch.equal(v1, clean)
    # the crops are those of the dataset without the clean image (same seed, same crops)
    plain = build_pretrain_dataset(cfg.data, cfg.augment)
    assert all(torch.equal(a, b) for a, b in zip(plain[(5, 99)][:2], pre[(5, 99)][:2], strict=True))


def test_batches_carry_the_clean_images_and_survive_unreadable_samples(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    pre = build_pretrain_dataset(cfg.data, cfg.augment).with_clean(eval_transform(cfg.augment))
    batch = next(iter(build_loader(pre, 8, True, 0, 0, 0, True)))
    assert batch.clean is not None and batch.clean.shape == batch.view1.shape == (8, 3, 16, 16)
    assert batch.local_views == ()
    empty = collate_skip_none([None, None], n_fields=5)
    assert empty.label.numel() == 0 and empty.clean is not None and empty.clean.numel() == 0
    kept = collate_skip_none([pre[(0, 1)], None, pre[(1, 2)]], n_fields=5)
    assert kept.skipped == 1 and kept.clean.shape[0] == 2


def test_the_probe_never_changes_what_is_trained(tmp_path: Path) -> None:
    """Same weights with the probe on clean images, on the views, or off: it reads, never writes."""
    states = {}
    for name, extra in {"clean": ("train.probe_input=clean",), "views": ("train.probe_input=views",),
                        "off": ("train.online_probe=false",)}.items():
        pretrain(_cfg(tmp_path / name, *extra), progress=False)
        states[name] = load_pretrained(tmp_path / name / "checkpoint.pt").encoder.state_dict()
    for name in ("views", "off"):
        for k, v in states["clean"].items():
            assert torch.equal(v, states[name][k]), (name, k)


def test_clean_probe_tracks_better_than_a_probe_on_the_views(tmp_path: Path) -> None:
    """On frozen features (lr 0: the encoder stays at its initialisation) the probe on clean
    images ends well above the probe on augmented views, on the validation split."""
    res = {}
    for name in ("clean", "views"):
        summ = pretrain(_cfg(tmp_path / name, f"train.probe_input={name}", "optim.lr=0", "train.probe_lr=1e-2",
                             "train.max_steps_per_epoch=20", "augment.c_min=0.08"), progress=False)
        res[name] = summ["online_probe_val_top1"]
    assert res["clean"] > res["views"] + 5, res  # measured: 37.6 against 25.1
