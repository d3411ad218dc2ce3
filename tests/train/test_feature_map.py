"""``cossl_train.backbones.external``: the feature map and the model's own global of any network,
trainable (gradients against the model's own forward), and the one-line refusals. The per-family
numbers against each model's own forward pass are in tests/analysis/test_external_families.py."""

from __future__ import annotations

import doctest

import pytest
import timm
import torch
import torchvision
from torch import nn

import cossl_train
from cossl_train import backbones
from cossl_train.backbones import external, library, spec
from cossl_train.backbones.external import FeatureMap, feature_map, featuremap
from cossl_train.encoder import Encoder
from cossl_train.errors import BackboneError


def _vit(**kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                             depth=1, **kwargs)


@pytest.mark.parametrize("module", [external, featuremap, library, spec, backbones])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_exported_from_the_package() -> None:
    assert cossl_train.feature_map is feature_map and cossl_train.FeatureMap is FeatureMap
    assert "feature_map" in cossl_train.__all__


def test_gradients_flow_as_through_the_models_own_forward() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    ref = torchvision.models.resnet18()
    ref.load_state_dict(model.state_dict())
    fm = feature_map(model, input_size=64)
    model.train(), ref.train()
    z = torch.randn(2, 3, 64, 64)
    fmap, g = fm.forward_global(z)
    (fmap.square().mean() + g.sum()).backward()
    body = nn.Sequential(*list(ref.children())[:-2])
    ref_map = body(z)
    (ref_map.square().mean() + ref_map.mean(dim=(2, 3)).sum()).backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert torch.allclose(model.conv1.weight.grad, ref.conv1.weight.grad, rtol=1e-4, atol=1e-6)
    assert model.fc.weight.grad is None  # the classifier never runs


def test_class_token_global_is_taken_in_the_pass_with_its_gradient() -> None:
    model = _vit()
    fm = feature_map(model)
    z = torch.randn(2, 3, 32, 32)
    fmap, g = fm.forward_global(z)
    assert fm.pooling_kind == "pass" and not fm.poolable_subsets
    assert torch.equal(g, model.forward_features(z)[:, 0])
    g.sum().backward()
    assert model.cls_token.grad is not None and model.cls_token.grad.abs().sum() > 0
    fm.eval()
    with torch.no_grad():
        latest = fm(z)
        assert torch.equal(fm.pool(latest), model.forward_features(z)[:, 0])
        with pytest.raises(BackboneError, match="latest forward"):
            fm.pool(latest.clone())  # a map it did not just give: its class token is unknown


def test_encoder_encode_uses_the_backbones_own_global() -> None:
    model = _vit()
    enc = Encoder(feature_map(model), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), head=nn.Linear(192, 4)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        fmap, h = enc.encode(x)
        tokens = model.forward_features((x - 0.5) / 0.5)
        assert torch.allclose(h, enc.head(tokens[:, 0]), atol=1e-6)
        assert torch.equal(fmap.flatten(2).transpose(1, 2), tokens[:, 1:])
        assert torch.equal(enc.pool(enc(x)), h)
    assert enc.pooling_kind == "pass" and not enc.poolable_subsets and enc.global_text.startswith("class token")


def test_mean_global_head_is_shared_not_copied() -> None:
    model = _vit(global_pool="avg")
    fm = feature_map(model)
    assert fm.poolable_subsets and fm.head._module is model  # the pre-logits step of the model itself
    names = {k for k, _ in fm.state_dict().items()}
    assert names == {f"net.{k}" for k in model.state_dict()}


def test_tokens_that_do_not_fill_the_patch_grid_are_one_line() -> None:
    model = _vit()
    full = model.forward_features
    model.forward_features = lambda x: full(x)[:, :-1]  # one patch token short of the 4x4 grid
    with pytest.raises(BackboneError) as err:
        feature_map(model, source="backbone.name=m:f")
    assert "gives 16 tokens (1 prefix), which do not fill the 4x4 patch grid" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_module_that_gives_no_map_is_one_line() -> None:
    with pytest.raises(BackboneError, match=r"gives \(1, 5\), not a \(B, C, h, w\) feature map"):
        feature_map(nn.Sequential(nn.Flatten(), nn.LazyLinear(5)), input_size=8)


def test_a_vit_at_the_wrong_size_is_one_line() -> None:
    with pytest.raises(BackboneError, match="cannot run on 64 px images.*built for 32 px.*img_size=N"):
        feature_map(_vit(), input_size=64)


def test_library_networks_lose_only_their_final_linear_layer() -> None:
    convnext = library.build_model("torchvision:convnext_tiny")
    assert isinstance(convnext.classifier[2], nn.Identity) and isinstance(convnext.classifier[0], nn.Module)
    assert type(convnext.classifier[0]).__name__ == "LayerNorm2d"
    mobilenet = library.build_model("torchvision:mobilenet_v3_small")
    assert isinstance(mobilenet.classifier[3], nn.Identity) and isinstance(mobilenet.classifier[0], nn.Linear)
    assert library.build_model("timm:resnet18").num_classes == 0


@pytest.mark.parametrize("text, kind, name", [
    ("torchvision:resnet18", "torchvision", "resnet18"),
    ("timm:vit_tiny_patch16_224", "timm", "vit_tiny_patch16_224"),
    ("torchvision.models:resnet18", "callable", "torchvision.models:resnet18"),
    ("module:torchvision.models:resnet18", "callable", "torchvision.models:resnet18"),
    ("runs/x/checkpoint.pt", "cossl", "runs/x/checkpoint.pt"),
])
def test_parse_spec(text: str, kind: str, name: str) -> None:
    parsed = spec.parse_spec(text)
    assert (parsed.kind, parsed.name, parsed.weights) == (kind, name, None)


@pytest.mark.parametrize("text, piece", [
    ("module:no_such_module_xyz:build", "unknown library or module 'no_such_module_xyz'"),
    ("module:torchvision.models", "write module:MODULE:FUNCTION"),
    ("hf:facebook/dino", "unknown library 'hf'"),
    ("timm:", "names no timm model"),
])
def test_bad_specs(text: str, piece: str) -> None:
    with pytest.raises(BackboneError, match=piece):
        spec.parse_spec(text)


def test_this_packages_backbones_are_their_own_map() -> None:
    from cossl_train.backbones import build_backbone

    net = build_backbone("rf_resnet18_rf13", width=8).eval()
    fm = feature_map(net, input_size=32)
    z = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fmap, g = fm.forward_global(z)
        assert torch.equal(fmap, net(z)) and torch.equal(g, net(z).mean(dim=(2, 3)))
    assert fm.num_features == net.num_features and fm.poolable_subsets and fm.global_text == "spatial mean of the map"
