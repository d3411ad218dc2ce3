"""Internal corruption: no-op at strength 0, constant output when everything is zeroed, hooks cleaned up."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cossl_analysis import corrupt_features, corrupted, internal_corruption_sweep, probe_accuracy
from cossl_analysis.report import save_internal_corruption
from cossl_train.encoder import global_pool


def _setup() -> tuple[nn.Module, nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
    )
    probe = nn.Linear(8, 4)
    images = torch.rand(24, 3, 8, 8)
    # Centre the probe on these images' features so its predictions vary between images; then take
    # labels = the clean predictions, so the clean accuracy is 1 and any damage shows.
    with torch.no_grad():
        net.eval()
        feats = global_pool(net(images))
        probe.weight.mul_(10.0 / feats.std(dim=0).clamp_min(1e-6))
        probe.bias.copy_(-probe.weight @ feats.mean(dim=0))
        labels = probe(feats).argmax(dim=1)
    assert len(labels.unique()) > 1
    net.train()
    return net, probe, images, labels


def test_strength_zero_is_a_no_op() -> None:
    net, probe, images, labels = _setup()
    clean = probe_accuracy(net, probe, images, labels, batch_size=10)
    assert clean == 1.0
    for kind in ("noise", "zero"):
        res = internal_corruption_sweep(net, probe, images, labels, "1", kind=kind, strengths=[0.0])
        assert res.accuracy == [clean]
    net.eval()
    with torch.no_grad(), corrupted(net, "3", "noise", 0.0):
        out = net(images)
    torch.testing.assert_close(out, net(images).detach(), rtol=0, atol=0)


def test_zeroing_everything_gives_constant_output() -> None:
    net, probe, images, labels = _setup()
    net.eval()
    with torch.no_grad(), corrupted(net, "0", "zero", 1.0):
        out = net(images)
    # Conv0 output all zeros -> BN/ReLU/conv see the same input for every image.
    torch.testing.assert_close(out, out[:1].expand_as(out))
    with torch.no_grad():
        constant_class = probe(global_pool(out[:1])).argmax().item()
    res = internal_corruption_sweep(net, probe, images, labels, "0", kind="zero", strengths=[1.0])
    assert res.accuracy[0] == pytest.approx((labels == constant_class).float().mean().item())
    # On the final feature map: pooled features are 0, so every logit vector is the probe bias.
    res = internal_corruption_sweep(net, probe, images, labels, "", kind="zero", strengths=[1.0])
    assert res.accuracy[0] == pytest.approx((labels == probe.bias.argmax()).float().mean().item())


def test_sweep_restores_model_and_is_reproducible() -> None:
    net, probe, images, labels = _setup()
    net.eval()
    with torch.no_grad():
        before = net(images)
    net.train()
    a = internal_corruption_sweep(net, probe, images, labels, "3", kind="noise", strengths=[0.5, 8.0], seed=1)
    b = internal_corruption_sweep(net, probe, images, labels, "3", kind="noise", strengths=[0.5, 8.0], seed=1)
    assert a.accuracy == b.accuracy
    assert a.accuracy[1] < 1.0  # heavy noise hurts
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(images), before, rtol=0, atol=0)  # hook removed
    with pytest.raises(AttributeError):
        internal_corruption_sweep(net, probe, images, labels, "no.such.module")


def test_corrupt_statistics() -> None:
    z = torch.randn(4, 16, 32, 32) * torch.tensor([0.5, 1.0, 2.0, 4.0]).view(4, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    diff = corrupt_features(z, "noise", 0.5, gen) - z
    ratio = diff.flatten(1).std(dim=1) / z.flatten(1).std(dim=1)
    torch.testing.assert_close(ratio, torch.full((4,), 0.5), rtol=0.02, atol=0)
    zeroed = corrupt_features(z, "zero", 0.3, gen) == 0
    assert zeroed.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert corrupt_features(z, "zero", 0.0) is z
    with pytest.raises(ValueError):
        corrupt_features(z, "zero", 1.5)


def test_mask_zeroes_whole_positions_nested_across_strengths() -> None:
    z = torch.randn(3, 8, 10, 10) + 5.0  # no unit is 0 by chance
    masks = []
    for s in (0.2, 0.5, 0.8):
        out = corrupt_features(z, "mask", s, torch.Generator().manual_seed(3))
        zero = out == 0
        # a position is zeroed in every channel or in none
        assert torch.equal(zero.all(dim=1), zero.any(dim=1))
        assert zero[:, 0].float().mean().item() == pytest.approx(s, abs=0.1)
        kept = ~zero
        torch.testing.assert_close(out[kept], z[kept], rtol=0, atol=0)  # survivors untouched
        masks.append(zero[:, 0])
    # same seed: what is masked at a strength is masked at every larger one
    assert bool((masks[0] <= masks[1]).all()) and bool((masks[1] <= masks[2]).all())
    assert corrupt_features(z, "mask", 1.0).abs().sum() == 0
    with pytest.raises(ValueError):
        corrupt_features(z, "mask", 1.2)


def test_mask_on_the_final_map_is_the_probe_on_a_rescaled_mean() -> None:
    """Masking positions of the final map: the spatial mean sums the kept positions over all P."""
    net, probe, images, labels = _setup()
    res = internal_corruption_sweep(net, probe, images, labels, "", kind="mask", strengths=[0.5], seed=4)
    net.eval()
    with torch.no_grad():
        fmap = net(images)
        u = torch.rand((len(images), 1, *fmap.shape[2:]), generator=torch.Generator().manual_seed(4))
        pooled = global_pool(fmap * (u >= 0.5))
        expected = (probe(pooled).argmax(1) == labels).float().mean().item()
    assert res.accuracy[0] == pytest.approx(expected)


def test_save_writes_png_and_json(tmp_path) -> None:
    net, probe, images, labels = _setup()
    r1 = internal_corruption_sweep(net, probe, images, labels, "3", kind="noise", strengths=[0, 1, 4])
    r2 = internal_corruption_sweep(net, probe, images, labels, "3", kind="zero", strengths=[0, 0.5, 1])
    save_internal_corruption(r1, tmp_path / "noise.png")
    save_internal_corruption({"noise": r1, "zero": r2}, tmp_path / "both.png")
    assert (tmp_path / "noise.png").stat().st_size > 0 and (tmp_path / "both.png").stat().st_size > 0
    saved = json.loads((tmp_path / "both.json").read_text())
    assert saved["zero"]["accuracy"] == r2.accuracy and saved["noise"]["chance"] == 0.25
