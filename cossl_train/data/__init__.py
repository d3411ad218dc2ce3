"""Datasets (``data.dataset``: scenes, digits, imagefolder, tinyimagenet, cifar10/100, stl10) and
their builders: ``build_pretrain_dataset`` (two uint8 views, label, local crops), ``build_eval_datasets``
(train, val or None) and the deterministic ``build_loader``. Undecodable images are ``None`` and
dropped by ``collate_skip_none``, counted in ``batch.skipped``."""

from __future__ import annotations

from torch.utils.data import Dataset

from ..augment import MultiCrop, TwoViewCrop, eval_transform
from ..config import AugmentConfig, DataConfig
from ..errors import DataError
from .digits import DigitsDataset
from .folders import IMG_EXTENSIONS, ImageFolderDataset, TinyImageNetDataset, read_class_list
from .holdout import held_out_positions
from .loader import (
    EvalBatch,
    EvalDataset,
    PretrainBatch,
    PretrainDataset,
    SeededBatchSampler,
    build_loader,
    collate_skip_none,
    limit_indices,
)
from .scenes import DigitScenes
from .torchvision_sets import TORCHVISION_SETS, torchvision_dataset

__all__ = [
    "IMG_EXTENSIONS",
    "DigitScenes",
    "DigitsDataset",
    "EvalBatch",
    "EvalDataset",
    "ImageFolderDataset",
    "PretrainBatch",
    "PretrainDataset",
    "SeededBatchSampler",
    "TinyImageNetDataset",
    "build_eval_datasets",
    "build_loader",
    "build_pretrain_dataset",
    "collate_skip_none",
    "limit_indices",
    "read_class_list",
]

#: every ``data.dataset`` name the builders accept
DATASETS = ("scenes", "digits", "imagefolder", "tinyimagenet", *TORCHVISION_SETS)


def _unknown(name: str) -> ValueError:
    return ValueError(f"data.dataset={name!r} is not one of {', '.join(DATASETS)}")


def _require_root(data_cfg: DataConfig) -> str:
    if not data_cfg.root:
        raise DataError(f"data.root must be set for data.dataset={data_cfg.dataset}")
    return data_cfg.root


def _imagefolder_train(data_cfg: DataConfig) -> ImageFolderDataset:
    classes = read_class_list(data_cfg.class_list) if data_cfg.class_list else None
    return ImageFolderDataset(_require_root(data_cfg), classes=classes)


def _pretrain_base(data_cfg: DataConfig) -> Dataset:
    name = data_cfg.dataset
    if name == "scenes":
        return DigitScenes("train", data_cfg.scenes_size)
    if name == "digits":
        return DigitsDataset("train", data_cfg.digits_size)
    if name == "imagefolder":
        return _imagefolder_train(data_cfg)
    if name == "tinyimagenet":
        return TinyImageNetDataset(_require_root(data_cfg), "train")
    if name in ("cifar10", "cifar100"):
        return torchvision_dataset(name, data_cfg.root, "train", data_cfg.download)
    if name == "stl10":
        return torchvision_dataset(name, data_cfg.root, "train+unlabeled", data_cfg.download)
    raise _unknown(name)


def _eval_bases(data_cfg: DataConfig) -> tuple[Dataset, Dataset | None]:
    name = data_cfg.dataset
    if name == "scenes":
        return DigitScenes("train", data_cfg.scenes_size), DigitScenes("val", data_cfg.scenes_size)
    if name == "digits":
        return DigitsDataset("train", data_cfg.digits_size), DigitsDataset("val", data_cfg.digits_size)
    if name == "imagefolder":
        train = _imagefolder_train(data_cfg)
        val = None
        if data_cfg.val_root:
            val = ImageFolderDataset(
                data_cfg.val_root, labelled=True, class_to_idx=train.class_to_idx if train.labelled else None
            )
        return train, val
    if name == "tinyimagenet":
        root = _require_root(data_cfg)
        return TinyImageNetDataset(root, "train"), TinyImageNetDataset(root, "val")
    if name in TORCHVISION_SETS:
        return (torchvision_dataset(name, data_cfg.root, "train", data_cfg.download),
                torchvision_dataset(name, data_cfg.root, "test", data_cfg.download))
    raise _unknown(name)


def build_pretrain_dataset(data_cfg: DataConfig, aug_cfg: AugmentConfig) -> PretrainDataset:
    """The pre-training set: samples ``(view1 uint8 (3,R,R), view2 uint8 (3,R,R), label)``, and
    ``(view1, view2, label, local_views)`` with ``augment.local_crops`` > 0 (multi-crop);
    :meth:`PretrainDataset.with_clean` adds each image resized as the evaluation does.

    scenes, digits: the train split; imagefolder: ``data.root``; tinyimagenet: ``train/``; CIFAR: the
    train set; STL-10: ``train+unlabeled`` (unlabelled images carry label -1). ``data.limit`` keeps a fixed subset.
    An image folder without ``data.val_root`` carries label -1 on the images the evaluations hold out
    (``cossl_train.data.holdout``).
    """
    base = _pretrain_base(data_cfg)
    crop = MultiCrop(aug_cfg) if aug_cfg.local_crops else TwoViewCrop(aug_cfg)
    indices = limit_indices(len(base), data_cfg.limit)  # type: ignore[arg-type]
    hidden: list[int] = []
    if data_cfg.dataset == "imagefolder" and not data_cfg.val_root:
        # the images the evaluations hold out (eval_splits) are pre-trained on without their labels,
        # so the online probe never trains on an image it is later scored on
        hidden = held_out_positions(base, indices)
    return PretrainDataset(base, crop, indices, hidden_labels=hidden)


def build_eval_datasets(data_cfg: DataConfig, aug_cfg: AugmentConfig) -> tuple[EvalDataset, EvalDataset | None]:
    """Probe / kNN sets ``(train, val or None)``: samples ``(uint8 (3,R,R), label)``.

    scenes, digits: train/val splits; imagefolder: ``data.root`` and ``data.val_root`` (None when not
    given; the validation folder uses the training folder's class indices); tinyimagenet:
    ``train/`` and ``val/``; CIFAR: train/test; STL-10: train/test. ``data.limit`` cuts the
    training set only, to the same subset as :func:`build_pretrain_dataset` where both read the
    same files.
    """
    tf = eval_transform(aug_cfg)
    train, val = _eval_bases(data_cfg)
    train_ds = EvalDataset(train, tf, limit_indices(len(train), data_cfg.limit))  # type: ignore[arg-type]
    return train_ds, (EvalDataset(val, tf) if val is not None else None)
