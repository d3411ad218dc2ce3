"""The embedded default dataset (digit scenes): deterministic, documented sizes, disjoint held-out split."""

from __future__ import annotations

import torch

from cossl_train.config import load_config
from cossl_train.data import build_eval_datasets, build_pretrain_dataset
from cossl_train.data.digits import digits_split
from cossl_train.data.scenes import SCENES_SIZES, DigitScenes, digit_scenes

SIDE = 16  # the generator's cost grows with the side; the properties do not depend on it


def test_documented_sizes_classes_and_image_size() -> None:
    assert SCENES_SIZES == {"train": 6000, "val": 2000}
    for split, n in SCENES_SIZES.items():
        ds = DigitScenes(split, SIDE)
        assert len(ds) == n
        x, y = ds[0]
        assert x.dtype == torch.uint8 and x.shape == (3, SIDE, SIDE) and 0 <= y < 10
        assert ds.classes == [str(c) for c in range(10)]
        # balanced: n / 10 images per class
        assert torch.equal(ds.labels.bincount(minlength=10), torch.full((10,), n // 10))


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    a = digit_scenes("val", SIDE, 0)
    digit_scenes.cache_clear()  # regenerate instead of returning the cached tensors
    b = digit_scenes("val", SIDE, 0)
    assert a[0] is not b[0]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    c = digit_scenes("val", SIDE, 1)
    assert not torch.equal(a[0], c[0])


def test_held_out_split_shares_no_glyph_and_no_image_with_training() -> None:
    train, val = DigitScenes("train", SIDE), DigitScenes("val", SIDE)
    split = digits_split()
    assert set(train.glyphs.tolist()) <= set(split["train"].tolist())
    assert set(val.glyphs.tolist()) <= set(split["val"].tolist())
    assert not set(train.glyphs.tolist()) & set(val.glyphs.tolist())
    # and no rendered image of one split appears in the other
    seen = {bytes(x.numpy().tobytes()) for x in train.images}
    assert not any(bytes(x.numpy().tobytes()) in seen for x in val.images)


def test_labels_are_the_glyphs_digits() -> None:
    from sklearn.datasets import load_digits

    ds = DigitScenes("val", SIDE)
    assert torch.equal(ds.labels, torch.from_numpy(load_digits().target)[ds.glyphs])


def test_scenes_is_the_default_dataset_and_builds_views() -> None:
    cfg = load_config(None, [f"data.scenes_size={SIDE}", f"augment.resolution={SIDE}"])
    assert cfg.data.dataset == "scenes"
    pre = build_pretrain_dataset(cfg.data, cfg.augment)
    v1, v2, label = pre[(0, 123)]
    assert v1.shape == v2.shape == (3, SIDE, SIDE) and not torch.equal(v1, v2) and 0 <= label < 10
    train, val = build_eval_datasets(cfg.data, cfg.augment)
    assert val is not None and (len(train), len(val)) == (6000, 2000)
