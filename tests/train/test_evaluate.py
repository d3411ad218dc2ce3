"""Offline evaluation against independent references (scikit-learn) and its protocols."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from cossl_train import evaluate
from cossl_train.checkpoint import load_pretrained, save_probe
from cossl_train.config import load_config
from cossl_train.evaluate import TrainViewTransform, knn_predict, linear_probe
from cossl_train.trainer import pretrain


def _blobs(n: int, d: int = 6, classes: int = 4, seed: int = 0, spread: float = 1.6) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * spread
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, d, generator=g) + 3.0  # an offset, as post-ReLU features have
    return x, y


def test_weighted_knn_equals_scikit_learn() -> None:
    tx, ty = _blobs(300)
    vx, _ = _blobs(120, seed=1)
    temp, k = 0.07, 15
    ours = knn_predict(tx, ty, vx, k=k, temperature=temp)
    # scikit-learn's cosine distance is 1 - cos; the same exp(cos / T) vote weights
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                               weights=lambda d: np.exp((1 - d) / temp)).fit(tx.numpy(), ty.numpy())
    assert (ours.numpy() == ref.predict(vx.numpy())).all()


def test_fast_linear_probe_agrees_with_scikit_learn_logistic_regression() -> None:
    tx, ty = _blobs(600, spread=1.0)
    vx, vy = _blobs(400, seed=1, spread=1.0)
    res = linear_probe(tx, ty, vx, vy, epochs=60, lr=0.1, batch_size=64, progress=False)
    mean, std = tx.mean(0), tx.std(0)
    ref = LogisticRegression(max_iter=2000).fit(((tx - mean) / std).numpy(), ty.numpy())
    ref_pred = ref.predict(((vx - mean) / std).numpy())
    ref_top1 = 100 * (ref_pred == vy.numpy()).mean()
    assert 40 < ref_top1 < 99  # overlapping classes: a real test of the fit, not a separable toy
    assert res.top1 == pytest.approx(ref_top1, abs=3.0)
    # the returned probe acts on raw features (standardisation folded in) and predicts like sklearn
    ours = res.probe(vx).argmax(1).numpy()
    assert (ours == ref_pred).mean() > 0.9
    assert res.protocol == "fast"


def test_fast_linear_probe_is_a_function_of_its_seed() -> None:
    """The head's initial weights come from the probe's seed, not from whatever the caller's RNG holds,
    so the analyses' train_probe and `cossl-train linear-probe` train the same probe."""
    tx, ty = _blobs(200)
    vx, vy = _blobs(80, seed=1)
    probes = []
    for state in (0, 123):
        torch.manual_seed(state)  # a different global RNG state each time
        probes.append(linear_probe(tx, ty, vx, vy, epochs=3, seed=5, progress=False).probe)
    assert torch.equal(probes[0].weight, probes[1].weight) and torch.equal(probes[0].bias, probes[1].bias)
    other = linear_probe(tx, ty, vx, vy, epochs=3, seed=6, progress=False).probe
    assert not torch.equal(other.weight, probes[0].weight)


def _tiny_checkpoint(tmp_path: Path) -> Path:
    cfg = load_config(None, [*TINY_OVERRIDES, "method.name=byol", "train.epochs=1", "train.max_steps_per_epoch=2",
                             "data.limit=256", "train.batch_size=32", f"train.out_dir={tmp_path}"])
    pretrain(cfg, progress=False)
    return tmp_path / "checkpoint.pt"


def test_standard_protocol_trains_on_augmented_views_and_names_itself(tmp_path: Path) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "run")
    pre = load_pretrained(ckpt)
    cfg = load_config(None, [*TINY_OVERRIDES, "method.name=byol", "data.limit=256", "eval.linear_protocol=standard",
                             "eval.linear_epochs=2", "eval.linear_batch_size=64"])
    res = evaluate.evaluate_encoder(pre.encoder, cfg, linear=True, knn=False, progress=False)
    assert res["linear_protocol"] == "standard"
    assert 10.0 < res["linear_top1"] <= res["linear_top5"] <= 100.0  # 10 classes: chance is 10 %
    # the training views are random-resized crops + flips: two draws of one image differ
    img = torch.arange(3 * 16 * 16, dtype=torch.float32).reshape(3, 16, 16).div(3 * 256).mul(255).to(torch.uint8)
    views = TrainViewTransform(16, (0.08, 1.0))
    torch.manual_seed(0)
    a, b = views(img), views(img)
    assert a.shape == b.shape == (3, 16, 16) and not torch.equal(a, b)


def test_feature_extraction_uses_the_configured_loader_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = evaluate._loader

    def spy(dataset, batch_size, num_workers, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(num_workers)
        return real(dataset, batch_size, num_workers, *args, **kw)

    monkeypatch.setattr(evaluate, "_loader", spy)
    ckpt = _tiny_checkpoint(tmp_path / "run")
    seen.clear()
    cfg = load_config(None, [*TINY_OVERRIDES, "data.num_workers=2", "data.limit=128"])
    with_workers = evaluate.evaluate_encoder(load_pretrained(ckpt).encoder, cfg, linear=False, progress=False)
    assert seen == [2, 2]  # training and validation features
    cfg0 = load_config(None, [*TINY_OVERRIDES, "data.num_workers=0", "data.limit=128"])
    assert evaluate.evaluate_encoder(load_pretrained(ckpt).encoder, cfg0, linear=False,
                                     progress=False)["knn_top1"] == with_workers["knn_top1"]


def test_offline_probe_is_used_only_for_its_own_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "run")
    pre = load_pretrained(ckpt)
    assert pre.probe_source == "online probe" and pre.probe is not None
    offline = torch.nn.Linear(pre.probe.in_features, pre.probe.out_features)
    torch.nn.init.constant_(offline.weight, 0.5)
    save_probe(ckpt, offline, pre.encoder, pre.epoch, {"dataset": "digits"}, "fast", {"linear_top1": 1.0})
    again = load_pretrained(ckpt)
    assert again.probe_source == "offline linear probe (fast)" and again.probe_data == {"dataset": "digits"}
    assert torch.equal(again.probe.weight, offline.weight)

    # the checkpoint is trained further (new weights, new epoch): the old probe is not used
    state = torch.load(ckpt, weights_only=True)
    state["model"] = {k: (v + 1 if v.is_floating_point() and k.startswith("encoder.") else v)
                      for k, v in state["model"].items()}
    torch.save(state, ckpt)
    import logging

    logger = logging.getLogger("cossl_train")  # it does not propagate to the root logger
    logger.addHandler(caplog.handler)
    try:
        moved = load_pretrained(ckpt)
    finally:
        logger.removeHandler(caplog.handler)
    assert moved.probe_source == "online probe"
    assert not torch.equal(moved.probe.weight, offline.weight)
    assert "not using the offline probe" in caplog.text and "other encoder weights" in caplog.text
    assert math.isfinite(float(moved.probe.weight.detach().sum()))
