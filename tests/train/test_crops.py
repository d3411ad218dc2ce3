"""The batched random-resized crop of images held in memory: its boxes follow torchvision's
RandomResizedCrop distribution, its pixels torchvision's antialiased crop, a sample does not depend
on its batch, and the loader, the online probe's clean images and multi-crop use it."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from scipy import stats
from torch.utils.data import BatchSampler, SequentialSampler

from cossl_train.augment import EvalTransform, MultiCrop, TwoViewCrop
from cossl_train.config import AugmentConfig, DataConfig
from cossl_train.crops import DRAWS_PER_VIEW, CropBoxes, resized_crops, sample_boxes, seed_uniforms
from cossl_train.data import DigitScenes, build_eval_datasets, build_loader, build_pretrain_dataset
from cossl_train.data.loader import batched_loader

N_BOXES = 4000


def _ours(height: int, width: int, scale: tuple[float, float]) -> np.ndarray:
    """(N, 4) boxes (top, left, h, w) of the batched sampler, one seed per box."""
    b = sample_boxes(seed_uniforms(np.arange(N_BOXES) * 1009 + 17, 0, DRAWS_PER_VIEW), height, width, scale)
    return np.stack([b.top, b.left, b.height, b.width], axis=1)


def _torchvision(height: int, width: int, scale: tuple[float, float]) -> np.ndarray:
    img = torch.zeros(1, height, width)
    torch.manual_seed(0)
    return np.array([T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(N_BOXES)])


def _chi2_same(a: np.ndarray, b: np.ndarray, min_count: int = 20) -> float:
    """p-value that two samples of categories (rows of ``a``, ``b``) come from one distribution;
    categories rarer than ``min_count`` in both together are pooled."""
    ca, cb = Counter(map(tuple, a)), Counter(map(tuple, b))
    keys = sorted(set(ca) | set(cb))
    common = [k for k in keys if ca[k] + cb[k] >= min_count]
    rare = [k for k in keys if ca[k] + cb[k] < min_count]
    table = [[ca[k] for k in common] + [sum(ca[k] for k in rare)], [cb[k] for k in common] + [sum(cb[k] for k in rare)]]
    table = [row if rare else row[:-1] for row in table]
    return stats.chi2_contingency(np.array(table))[1]


@pytest.mark.parametrize(("height", "width", "scale"), [(32, 32, (0.2, 1.0)), (24, 40, (0.08, 1.0)),
                                                         (6, 64, (0.08, 1.0))])
def test_boxes_follow_torchvisions_distribution(height: int, width: int, scale: tuple[float, float]) -> None:
    """Sides (h, w) jointly and the offsets (as fractions of their range), against
    ``RandomResizedCrop.get_params``; the thin image falls back to the central crop often."""
    ours, ref = _ours(height, width, scale), _torchvision(height, width, scale)
    assert _chi2_same(ours[:, 2:], ref[:, 2:]) > 1e-3
    for k, side in ((0, 2), (1, 3)):  # offsets, uniform over the free range
        room_o, room_r = (height, width)[k] - ours[:, side] + 1, (height, width)[k] - ref[:, side] + 1
        assert stats.ks_2samp((ours[:, k] + 0.5) / room_o, (ref[:, k] + 0.5) / room_r).pvalue > 1e-3
    area_o, area_r = (ours[:, 2] * ours[:, 3]).mean(), (ref[:, 2] * ref[:, 3]).mean()
    assert abs(area_o - area_r) < 0.03 * height * width
    assert (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()


def test_fallback_box_is_torchvisions_central_crop() -> None:
    """No attempt fits a 4 x 64 image at full scale: both give the same central 4 x 5 box."""
    ours = _ours(4, 64, (1.0, 1.0))
    torch.manual_seed(0)
    ref = T.RandomResizedCrop.get_params(torch.zeros(1, 4, 64), [1.0, 1.0], [3 / 4, 4 / 3])
    assert (ours == np.array(ref)).all() and tuple(ref) == (0, 29, 4, 5)


def test_flip_is_a_fair_coin() -> None:
    b = sample_boxes(seed_uniforms(np.arange(N_BOXES), 0, DRAWS_PER_VIEW), 32, 32, (0.2, 1.0))
    assert abs(b.flip.mean() - 0.5) < 3 * 0.5 / np.sqrt(N_BOXES)


def _per_image(images: torch.Tensor, boxes: CropBoxes, side: int) -> torch.Tensor:
    """The independent computation: torchvision's antialiased resized_crop, then the flip."""
    out = []
    for i in range(len(boxes)):
        top, left, h, w, flip = boxes[i]
        crop = TF.resized_crop(images[i], top, left, h, w, [side, side], antialias=True)
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


@pytest.mark.parametrize(("side", "scale"), [(24, (0.2, 1.0)), (14, (0.05, 0.14)), (48, (0.08, 1.0))])
def test_batched_crop_is_torchvisions_crop(side: int, scale: tuple[float, float]) -> None:
    """Down- and upscaling, flips included: within one grey level of torchvision, pixel by pixel."""
    images = DigitScenes("val", 32).images[:96]
    boxes = sample_boxes(seed_uniforms(np.arange(96) + 5, 0, DRAWS_PER_VIEW), 32, 32, scale)
    got, ref = resized_crops(images, boxes, side), _per_image(images, boxes, side)
    diff = (got.int() - ref.int()).abs()
    assert got.shape == (96, 3, side, side) and got.dtype == torch.uint8
    assert diff.max() <= 1 and diff.float().mean() < 0.01
    assert 20 < boxes.flip.sum() < 76


def test_crop_of_a_coordinate_image_covers_its_box() -> None:
    """Upscaling a ramp: the first and last output columns stay within the box's columns."""
    ramp = torch.arange(64, dtype=torch.uint8).expand(3, 64, 64)[None] * 3
    boxes = CropBoxes(np.array([5]), np.array([10]), np.array([20]), np.array([16]), np.array([False]))
    row = resized_crops(ramp, boxes, 32)[0, 0, 0]
    assert row[0] == 30 and row[-1] == 75 and (row.int().diff() >= 0).all()  # columns 10 and 25, x 3
    flipped = resized_crops(ramp, CropBoxes(*(getattr(boxes, f) for f in ("top", "left", "height", "width")),
                                            np.array([True])), 32)
    assert torch.equal(flipped[0, 0, 0], row.flip(0))


def test_a_sample_is_the_same_in_any_batch_and_thread_count() -> None:
    """Exact arithmetic: the crop of one image does not depend on the batch or the threads."""
    crop = TwoViewCrop(AugmentConfig(resolution=24))
    images = DigitScenes("val", 32).images[:40]
    seeds = list(range(100, 140))
    whole = crop.batch(images, seeds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parts = [crop.batch(images[i:i + 7], seeds[i:i + 7]) for i in range(0, 40, 7)]
    finally:
        torch.set_num_threads(threads)
    for v in (0, 1):
        assert torch.equal(whole[v], torch.cat([p[v] for p in parts]))
    assert not torch.equal(whole[0], whole[1])


def test_per_image_and_batched_paths_cut_the_same_boxes() -> None:
    """``TwoViewCrop(img, seed)`` (torchvision, per image, for files) and ``batch`` agree."""
    crop = TwoViewCrop(AugmentConfig(resolution=20))
    images = DigitScenes("val", 32).images[:16]
    batch = crop.batch(images, range(16))
    for i in range(16):
        for v, view in enumerate(crop(images[i], seed=i)):
            assert (view.int() - batch[v][i].int()).abs().max() <= 1


def test_multicrop_local_views_batched() -> None:
    """Local views: torchvision's crops of their own boxes; the global views do not depend on M."""
    cfg = AugmentConfig(resolution=24, local_crops=3, local_resolution=12)
    multi, two = MultiCrop(cfg), TwoViewCrop(cfg)
    images = DigitScenes("val", 32).images[:24]
    seeds = np.arange(24) * 3
    v1, v2, local = multi.batch(images, seeds)
    assert len(local) == 3 and all(v.shape == (24, 3, 12, 12) for v in local)
    t1, t2, _ = two.batch(images, seeds)
    assert torch.equal(v1, t1) and torch.equal(v2, t2)
    boxes = multi.boxes(seeds, 32, 32)
    for m in range(3):
        ref = _per_image(images, boxes[2 + m], 12)
        assert (local[m].int() - ref.int()).abs().max() <= 1
        area = boxes[2 + m].height * boxes[2 + m].width / 32**2
        assert area.max() < 0.25  # the local scale range (0.05, 0.14), with rounding
    assert not torch.equal(local[0], local[1])


def test_clean_images_are_the_evaluation_transform() -> None:
    """The online probe's clean images: each exactly EvalTransform's output for its image."""
    aug = AugmentConfig(resolution=24)
    ds = build_pretrain_dataset(DataConfig(limit=64), aug).with_clean(EvalTransform(24))
    assert ds.batchable
    keys = [(i, 1000 + i) for i in range(0, 64, 5)]
    batch = ds.batch(keys)
    for row, (i, _) in enumerate(keys):
        img = ds.base.images[ds.indices[i]]
        assert torch.equal(batch.clean[row], EvalTransform(24)(img))
        assert batch.label[row] == ds.base.labels[ds.indices[i]]
        sample = ds[keys[row]]
        assert torch.equal(sample[0], batch.view1[row]) and torch.equal(sample[-1], batch.clean[row])


def test_two_shards_cut_what_one_process_cuts() -> None:
    """DDP: the loaders of ranks 0 and 1 cut, for every image, exactly the crops the single-process
    loader of the same (seed, epoch) cuts, so two processes see the one process's crops."""
    ds = build_pretrain_dataset(DataConfig(dataset="digits", digits_size=16, limit=64), AugmentConfig(resolution=16))

    def crops(rank: int, world: int) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
        loader = build_loader(ds, 8, True, 3, 2, 0, False, rank=rank, world_size=world)
        out = {}
        for keys, batch in zip(loader.sampler, loader, strict=True):
            out.update({k: (batch.view1[r], batch.view2[r]) for r, k in enumerate(keys)})
        return out

    one = crops(0, 1)
    two = {**crops(0, 2), **crops(1, 2)}
    assert one.keys() == two.keys() and len(one) == 64
    for k, (v1, v2) in one.items():
        assert torch.equal(v1, two[k][0]) and torch.equal(v2, two[k][1])


def test_in_memory_loader_uses_no_workers_and_files_keep_theirs(tmp_path) -> None:
    from conftest import random_image_folder

    mem = build_pretrain_dataset(DataConfig(dataset="digits", digits_size=16, limit=64), AugmentConfig(resolution=16))
    assert build_loader(mem, 16, True, 0, 0, 2, True).num_workers == 0
    random_image_folder(tmp_path / "f", per_class=2)
    files = build_pretrain_dataset(DataConfig(dataset="imagefolder", root=str(tmp_path / "f")),
                                   AugmentConfig(resolution=16))
    assert not files.batchable and build_loader(files, 4, True, 0, 0, 2, True).num_workers == 2


def test_batched_evaluation_images_equal_the_per_image_ones() -> None:
    train, val = build_eval_datasets(DataConfig(limit=50), AugmentConfig(resolution=24))
    assert train.batchable and val.batchable
    batches = list(batched_loader(train, BatchSampler(SequentialSampler(train), 16, False)))
    assert [len(b.label) for b in batches] == [16, 16, 16, 2]
    images = torch.cat([b.image for b in batches])
    for i in range(50):
        img, label = train[i]
        assert torch.equal(images[i], img) and int(torch.cat([b.label for b in batches])[i]) == label
