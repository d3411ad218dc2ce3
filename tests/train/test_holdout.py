"""The held-out split of a folder without a validation split: chosen by a hash of each file path, the
same whatever the seed, and never trained on by a probe (online, linear, kNN, or the analyses')."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import random_image_folder
from torch import Tensor, nn

from cossl_train.config import load_config
from cossl_train.data import build_pretrain_dataset
from cossl_train.data.holdout import HOLDOUT, held_out, held_out_positions, sample_key
from cossl_train.evaluate import eval_splits, evaluate_encoder


def _digest(image: Tensor) -> str:
    return hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=8).hexdigest()


class MeanColour(nn.Module):
    """A frozen 'encoder' whose one position is the image's mean colour."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def _config(root: Path, seed: int) -> object:
    return load_config(None, ["data.dataset=imagefolder", f"data.root={root}", "data.num_workers=0",
                              "augment.resolution=16", f"train.seed={seed}", "eval.linear_epochs=2"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("holdout") / "images"
    random_image_folder(root, classes=("a", "b", "c"), per_class=20, size=20)
    return root


def test_the_split_is_a_hash_of_the_path_whatever_the_seed(folder: Path) -> None:
    _, val0 = eval_splits(_config(folder, 0).data, _config(folder, 0).augment)
    base = val0.dataset.base
    keys = [sample_key(base, i) for i in range(len(base))]
    assert keys[0] == "a/0.png"  # relative to the folder: moving it keeps the split
    expected = [i for i, k in enumerate(keys) if held_out(k)]
    assert sorted(val0.indices) == expected and 0 < len(expected) < len(keys)
    # about HOLDOUT of the images: a hash spreads them (60 files here, so loosely)
    assert abs(len(expected) / len(keys) - HOLDOUT) < 0.1
    # a folder of a few files still holds one out
    assert len(held_out_positions(base, [0, 1])) >= 1


def test_no_probe_trains_on_an_evaluation_image(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cossl-train linear-probe / knn (evaluate_encoder) and the online probe (the labelled samples of
    the pre-training set) never see an image the analyses evaluate on, whatever train.seed."""
    import cossl_train.evaluate as E
    from cossl_analysis.report.loading import load_eval_set
    from cossl_train.augment import eval_transform

    encoded: list[set[str]] = []
    real = E.extract_features

    def spy(encoder: nn.Module, dataset, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        encoded.append({_digest(dataset[i][0]) for i in range(len(dataset))})
        return real(encoder, dataset, *args, **kwargs)

    monkeypatch.setattr(E, "extract_features", spy)
    evaluation = {_digest(img) for img in load_eval_set(_config(folder, 0), progress=False).images}
    assert evaluation
    for seed in (0, 1, 2):
        cfg = _config(folder, seed)
        encoded.clear()
        evaluate_encoder(MeanColour(), cfg, linear=True, knn=True, progress=False)
        train_images, val_images = encoded
        assert val_images == evaluation, seed  # the same evaluation images whatever the seed
        assert not train_images & evaluation, seed
        ds = build_pretrain_dataset(cfg.data, cfg.augment).with_clean(eval_transform(cfg.augment))
        samples = [ds[i] for i in range(len(ds))]
        labelled = {_digest(s[4]) for s in samples if s[2] >= 0}
        assert labelled == train_images and len(labelled) + len(evaluation) == len(ds), seed
