"""Tiny-ImageNet-200 from its released folder layout: a fake tree with a few classes, a few tiny
images and one corrupt file; labels, splits, error messages and corrupt-file counting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from cossl_train.config import AugmentConfig, DataConfig, load_config
from cossl_train.data import (
    PretrainBatch,
    TinyImageNetDataset,
    build_eval_datasets,
    build_loader,
    build_pretrain_dataset,
)

AUG = AugmentConfig(resolution=16)
# wnids.txt order is deliberately not sorted: labels follow the sorted ids
WNIDS = ["n02", "n01", "n03"]
N_TRAIN = {"n01": 3, "n02": 2, "n03": 4}
VAL = [("val_0.JPEG", "n03"), ("val_1.JPEG", "n01"), ("val_2.JPEG", "n02"), ("val_3.JPEG", "n01")]


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), (value, 255 - value, 7)).save(path, format="JPEG", quality=95)


def _fake_tree(root: Path, corrupt: bool = True) -> Path:
    """A tiny-imagenet-200-like tree; with ``corrupt``, one training file is random bytes."""
    (root / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for k, wnid in enumerate(sorted(N_TRAIN)):
        for i in range(N_TRAIN[wnid]):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 60 * k + 10 * i)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored\n")
    if corrupt:
        (root / "train" / "n03" / "images" / "n03_9.JPEG").write_bytes(b"\xff\xd8 not really a jpeg" * 10)
    lines = []
    for i, (name, wnid) in enumerate(VAL):
        _jpeg(root / "val" / "images" / name, 200 - 20 * i)
        lines.append(f"{name}\t{wnid}\t0\t0\t11\t11")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _jpeg(root / "test" / "images" / "test_0.JPEG", 5)  # unlabelled: must not be read
    return root


def test_labels_follow_sorted_wnids_in_both_splits(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path / "tiny-imagenet-200", corrupt=False)
    train, val = TinyImageNetDataset(root, "train"), TinyImageNetDataset(root, "val")
    assert train.classes == val.classes == ["n01", "n02", "n03"]
    assert len(train) == 9 and sorted(train.targets) == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    # every training sample sits in the folder of its class
    for path, label in train.samples:
        assert Path(path).parent.parent.name == train.classes[label]
    # validation labels come from the annotation file, with the training indices
    assert {Path(p).name: label for p, label in val.samples} == {n: train.class_to_idx[w] for n, w in VAL}
    img, label = val[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (12, 12)
    assert {Path(p).relative_to(root).parts[0] for p, _ in train.samples + val.samples} == {"train", "val"}


def test_builders_and_config(tmp_path: Path) -> None:
    root = _fake_tree(tmp_path / "tiny-imagenet-200", corrupt=False)
    cfg = load_config(None, ["data.dataset=tinyimagenet", f"data.root={root}"])
    pre = build_pretrain_dataset(cfg.data, AUG)
    assert len(pre) == 9 and pre.num_classes == 3
    v1, v2, label = pre[(0, 3)]
    assert v1.shape == v2.shape == (3, 16, 16) and v1.dtype == torch.uint8 and label == 0
    train, val = build_eval_datasets(cfg.data, AUG)
    assert len(train) == 9 and val is not None and len(val) == 4
    assert sorted(val[i][1] for i in range(4)) == [0, 0, 1, 2]
    assert val[0][0].shape == (3, 16, 16)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_image_skipped_and_counted(tmp_path: Path, num_workers: int) -> None:
    root = _fake_tree(tmp_path / "tiny-imagenet-200")
    ds = build_pretrain_dataset(DataConfig(dataset="tinyimagenet", root=str(root)), AUG)
    assert len(ds) == 10
    batches = list(build_loader(ds, 4, True, 0, 0, num_workers, False))
    assert all(isinstance(b, PretrainBatch) for b in batches)
    assert sum(b.skipped for b in batches) == 1
    assert sum(len(b.label) for b in batches) == 9


def _message(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_parts_are_named(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    with pytest.raises(FileNotFoundError) as e:
        TinyImageNetDataset(root)
    assert _message(e) == f"Tiny-ImageNet folder not found: {root}"
    _fake_tree(root, corrupt=False)
    with pytest.raises(ValueError, match="data.root must be set for data.dataset=tinyimagenet"):
        build_pretrain_dataset(DataConfig(dataset="tinyimagenet"), AUG)

    (root / "val" / "val_annotations.txt").rename(root / "val" / "moved.txt")
    with pytest.raises(FileNotFoundError) as e:
        TinyImageNetDataset(root, "val")
    assert str(root / "val" / "val_annotations.txt") in _message(e)
    assert len(TinyImageNetDataset(root, "train")) == 9  # the training split does not need it

    (root / "train" / "n02" / "images").rename(root / "train" / "n02" / "elsewhere")
    with pytest.raises(FileNotFoundError) as e:
        TinyImageNetDataset(root, "train")
    assert str(root / "train" / "n02" / "images") in _message(e)

    (root / "wnids.txt").unlink()
    with pytest.raises(FileNotFoundError) as e:
        TinyImageNetDataset(root, "train")
    assert str(root / "wnids.txt") in _message(e)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("val_1.JPEG", "expected '<file>\\t<wnid>\\t...', got 'val_1.JPEG'"),
        ("val_1.JPEG\tn99\t0\t0\t1\t1", "class 'n99' is not in wnids.txt"),
        ("val_9.JPEG\tn01\t0\t0\t1\t1", "val_9.JPEG not found"),
    ],
)
def test_bad_annotation_line_is_named(tmp_path: Path, line: str, expected: str) -> None:
    root = _fake_tree(tmp_path / "tiny-imagenet-200", corrupt=False)
    ann = root / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    lines.insert(2, line)
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        TinyImageNetDataset(root, "val")
    msg = _message(e)
    assert msg.startswith(f"{ann}:3: ") and expected in msg
