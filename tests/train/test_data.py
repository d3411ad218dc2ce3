"""Datasets and loaders: digits, image folders (labelled, unlabelled, class lists, corrupt
files), torchvision error messages, loader determinism, and multi-crop batches."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cossl_train.augment import TwoViewCrop
from cossl_train.config import AugmentConfig, DataConfig
from cossl_train.data import (
    DigitsDataset,
    EvalBatch,
    ImageFolderDataset,
    PretrainBatch,
    PretrainDataset,
    build_eval_datasets,
    build_loader,
    build_pretrain_dataset,
    collate_skip_none,
    limit_indices,
    read_class_list,
)

AUG = AugmentConfig(resolution=16)


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _labelled_tree(root: Path, classes: dict[str, int]) -> None:
    for k, (name, n) in enumerate(classes.items()):
        for i in range(n):
            _png(root / name / f"{i}.png", (40 * k, 10 * i, 0))


def _add_bad_files(folder: Path) -> None:
    """A random-bytes 'jpeg' and a JPEG cut in half."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zz_random.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=90
    )
    (folder / "zz_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


# ------------------------------------------------------------------------------------ digits


def test_digits_sizes_labels_and_split() -> None:
    train, val, full = DigitsDataset("train", 32), DigitsDataset("val", 32), DigitsDataset("all", 32)
    assert len(full) == 1797
    assert len(train) + len(val) == 1797
    assert abs(len(val) - 0.2 * 1797) <= 5
    img, label = train[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])  # gray as RGB
    assert set(train.labels.tolist()) == set(range(10)) == set(val.labels.tolist())
    # stratified: every class is ~20% in val
    for c in range(10):
        n_val, n_all = int((val.labels == c).sum()), int((full.labels == c).sum())
        assert abs(n_val - 0.2 * n_all) <= 0.5 + 1e-9
    # disjoint, covering, deterministic
    assert not set(train.indices.tolist()) & set(val.indices.tolist())
    assert len(set(train.indices.tolist()) | set(val.indices.tolist())) == 1797
    assert torch.equal(DigitsDataset("val", 32).images, val.images)


def test_digits_native_size_keeps_values() -> None:
    from sklearn.datasets import load_digits

    ds = DigitsDataset("all", 8)
    ref = np.round(load_digits().images / 16 * 255).astype(np.uint8)
    assert np.array_equal(ds.images[:, 0].numpy(), ref)


def test_digits_builders_and_limit() -> None:
    cfg = DataConfig(dataset="digits", digits_size=16, limit=100)
    pre = build_pretrain_dataset(cfg, AUG)
    assert len(pre) == 100
    v1, v2, label = pre[(3, 11)]
    assert v1.shape == v2.shape == (3, 16, 16) and v1.dtype == torch.uint8 and 0 <= label <= 9
    train, val = build_eval_datasets(cfg, AUG)
    assert len(train) == 100 and val is not None and len(val) == len(DigitsDataset("val"))
    img, label = val[0]
    assert img.shape == (3, 16, 16) and img.dtype == torch.uint8
    assert limit_indices(10, 0) is None and limit_indices(10, 20) is None
    assert limit_indices(1000, 50) == limit_indices(1000, 50)


# ------------------------------------------------------------------------------- imagefolder


def test_imagefolder_labelled(tmp_path: Path) -> None:
    _labelled_tree(tmp_path, {"b_cls": 2, "a_cls": 3})
    ds = ImageFolderDataset(tmp_path)
    assert ds.labelled and ds.classes == ["a_cls", "b_cls"]
    assert len(ds) == 5 and sorted(ds.targets) == [0, 0, 0, 1, 1]
    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and label == 0


def test_imagefolder_unlabelled(tmp_path: Path) -> None:
    for i in range(4):
        _png(tmp_path / f"img{i}.png", (i, i, i))
    ds = ImageFolderDataset(tmp_path)
    assert not ds.labelled and len(ds) == 4 and set(ds.targets) == {-1}
    pre = build_pretrain_dataset(DataConfig(dataset="imagefolder", root=str(tmp_path)), AUG)
    v1, v2, label = pre[0]
    assert v1.shape == (3, 16, 16) and label == -1
    train, val = build_eval_datasets(DataConfig(dataset="imagefolder", root=str(tmp_path)), AUG)
    assert val is None and train[0][1] == -1
    # a labelled-looking tree can be forced unlabelled
    _labelled_tree(tmp_path / "sub", {"x": 2})
    assert len(ImageFolderDataset(tmp_path / "sub", labelled=False)) == 2


def test_imagefolder_class_list_and_val_root(tmp_path: Path) -> None:
    train_root, val_root = tmp_path / "train", tmp_path / "val"
    _labelled_tree(train_root, {"n1": 2, "n2": 2, "n3": 2})
    _labelled_tree(val_root, {"n1": 1, "n3": 1})
    lst = tmp_path / "classes.txt"
    lst.write_text("n3\n# a comment\n\nn1\n")
    assert read_class_list(str(lst)) == ["n3", "n1"]
    cfg = DataConfig(dataset="imagefolder", root=str(train_root), val_root=str(val_root), class_list=str(lst))
    train, val = build_eval_datasets(cfg, AUG)
    assert train.classes == ["n1", "n3"] and len(train) == 4
    assert val is not None and len(val) == 2
    assert sorted(val[i][1] for i in range(2)) == [0, 1]  # the training folder's indices
    assert val.base.class_to_idx == {"n1": 0, "n3": 1}
    lst.write_text("n1\nmissing_class\n")
    with pytest.raises(FileNotFoundError, match="missing_class"):
        build_pretrain_dataset(cfg, AUG)


def test_imagenet100_list() -> None:
    ids = read_class_list("imagenet100")
    assert len(ids) == 100 and len(set(ids)) == 100
    assert all(len(i) == 9 and i[0] == "n" and i[1:].isdigit() for i in ids)
    assert ids[0] == "n02869837" and ids[-1] == "n02090622"


def test_missing_root_messages(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        build_pretrain_dataset(DataConfig(dataset="imagefolder", root=str(missing)), AUG)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="class list file not found"):
        read_class_list(str(missing / "list.txt"))


@pytest.mark.parametrize(("name", "pretty"), [("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"), ("stl10", "STL-10")])
def test_torchvision_missing_files(tmp_path: Path, name: str, pretty: str) -> None:
    with pytest.raises(FileNotFoundError) as e:
        build_pretrain_dataset(DataConfig(dataset=name, root=str(tmp_path)), AUG)
    msg = str(e.value)
    assert msg == f"{pretty} not found under {tmp_path}; set data.download=true to fetch it"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_files_skipped_and_counted(tmp_path: Path, num_workers: int) -> None:
    for i in range(6):
        _png(tmp_path / f"ok{i}.png", (10 * i, 0, 0))
    _add_bad_files(tmp_path)
    ds = build_pretrain_dataset(DataConfig(dataset="imagefolder", root=str(tmp_path)), AUG)
    assert len(ds) == 8
    loader = build_loader(ds, batch_size=3, shuffle=True, seed=0, epoch=0, num_workers=num_workers, drop_last=False)
    batches = list(loader)
    assert all(isinstance(b, PretrainBatch) for b in batches)
    assert sum(b.skipped for b in batches) == 2
    assert sum(len(b.label) for b in batches) == 6
    assert all(b.view1.shape[1:] == (3, 16, 16) for b in batches)


def test_collate_all_skipped() -> None:
    b = collate_skip_none([None, None], n_fields=2)
    assert isinstance(b, EvalBatch) and b.skipped == 2 and b.label.numel() == 0
    b = collate_skip_none([None], n_fields=3)
    assert isinstance(b, PretrainBatch) and b.view1.shape[0] == 0


# ------------------------------------------------------------------------------------ loader


def _collect(loader) -> list[PretrainBatch]:
    return [b for b in loader]


def test_loader_determinism_and_epochs() -> None:
    ds = build_pretrain_dataset(DataConfig(digits_size=16, limit=64), AUG)

    def run(epoch: int, workers: int = 0, skip: int = 0) -> list[PretrainBatch]:
        return _collect(build_loader(ds, 16, True, 0, epoch, workers, True, "cpu", skip_batches=skip))

    a, b = run(0), run(0)
    assert len(a) == 4
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.view1, y.view1) and torch.equal(x.view2, y.view2) and torch.equal(x.label, y.label)
    c = run(1)
    assert not torch.equal(torch.cat([x.view1 for x in a]), torch.cat([x.view1 for x in c]))
    # the same batches with worker processes, and an exact mid-epoch resume
    w = run(0, workers=2)
    assert all(torch.equal(x.view1, y.view1) and torch.equal(x.label, y.label) for x, y in zip(a, w, strict=True))
    r = run(0, skip=2)
    assert len(r) == 2 and torch.equal(r[0].view2, a[2].view2)


def test_loader_eval_order_and_sharding() -> None:
    train, _ = build_eval_datasets(DataConfig(digits_size=8, limit=10), AugmentConfig(resolution=8))
    batches = list(build_loader(train, 4, False, 0, 0, 0, False))
    assert [len(b.label) for b in batches] == [4, 4, 2] and isinstance(batches[0], EvalBatch)
    assert torch.equal(batches[0].image[1], train[1][0])
    shards = [list(build_loader(train, 2, True, 0, 3, 0, False, rank=r, world_size=3)) for r in range(3)]
    sizes = [sum(len(b.label) for b in s) for s in shards]
    assert sizes == [4, 4, 4]  # 10 padded to 12


# -------------------------------------------------------------------------------- multi-crop

MULTI = AugmentConfig(resolution=16, local_crops=3, local_resolution=8)


def test_multicrop_batches_have_the_asked_shapes() -> None:
    ds = build_pretrain_dataset(DataConfig(digits_size=16, limit=40), MULTI)
    assert ds.n_local == 3 and ds.n_fields == 4
    v1, v2, label, local = ds[(0, 5)]
    assert v1.shape == (3, 16, 16) and len(local) == 3 and local[0].shape == (3, 8, 8)
    batches = list(build_loader(ds, 16, True, 0, 0, 0, False))
    assert [len(b.label) for b in batches] == [16, 16, 8]
    for b in batches:
        assert isinstance(b, PretrainBatch) and b.view1.shape == (len(b.label), 3, 16, 16)
        assert len(b.local_views) == 3
        for v in b.local_views:
            assert v.shape == (len(b.label), 3, 8, 8) and v.dtype == torch.uint8 and v.is_contiguous()
    # an all-unreadable batch keeps the layout
    empty = collate_skip_none([None, None], n_fields=4, n_local=3)
    assert empty.skipped == 2 and len(empty.local_views) == 3 and empty.local_views[0].shape[0] == 0


def test_multicrop_loader_determinism_workers_and_resume() -> None:
    ds = build_pretrain_dataset(DataConfig(digits_size=16, limit=64), MULTI)

    def run(workers: int = 0, skip: int = 0, epoch: int = 0) -> list[PretrainBatch]:
        return list(build_loader(ds, 16, True, 0, epoch, workers, True, "cpu", skip_batches=skip))

    def same(x: PretrainBatch, y: PretrainBatch) -> bool:
        return (torch.equal(x.view1, y.view1) and torch.equal(x.view2, y.view2) and torch.equal(x.label, y.label)
                and all(torch.equal(a, b) for a, b in zip(x.local_views, y.local_views, strict=True)))

    a = run()
    assert all(same(x, y) for x, y in zip(a, run(workers=2), strict=True))
    resumed = run(skip=2)
    assert len(resumed) == 2 and same(resumed[0], a[2]) and same(resumed[1], a[3])
    other = run(epoch=1)
    assert not torch.equal(torch.cat([x.local_views[0] for x in a]), torch.cat([x.local_views[0] for x in other]))


def test_local_crops_off_gives_the_two_view_batches() -> None:
    """augment.local_crops=0 is the plain two-view pipeline, bit for bit, and turning local crops
    on changes neither the order nor the global views."""
    data = DataConfig(dataset="digits", digits_size=16, limit=48)
    off = build_pretrain_dataset(data, AUG)
    assert off.n_local == 0 and off.n_fields == 3 and len(off[(0, 1)]) == 3
    digits = DigitsDataset("train", 16)
    plain = PretrainDataset(digits, TwoViewCrop(AUG), limit_indices(len(digits), 48))
    on = build_pretrain_dataset(data, AugmentConfig(resolution=16, local_crops=2))
    runs = [list(build_loader(ds, 16, True, 3, 1, 0, True)) for ds in (off, plain, on)]
    for b_off, b_plain, b_on in zip(*runs, strict=True):
        assert b_off.local_views == () and b_plain.local_views == () and len(b_on.local_views) == 2
        for other in (b_plain, b_on):
            assert torch.equal(b_off.view1, other.view1) and torch.equal(b_off.view2, other.view2)
            assert torch.equal(b_off.label, other.label)
