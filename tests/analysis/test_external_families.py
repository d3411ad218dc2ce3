"""Every model family's map and global against the model's own forward pass.

The global the analysis layer reads must be what the model itself feeds its final linear
classifier: for torchvision, the model's output once that layer is replaced by ``nn.Identity``;
for timm, ``forward_head(forward_features(x), pre_logits=True)``. The map must be what the model
pools (a Swin stage read by name, permuted from channels-last). Small instances of each family,
random weights (norm gains drawn away from 1, so that a missing norm shows), 32-80 px.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig

from cossl_analysis import patch_drop_analysis
from cossl_analysis.errors import AnalysisError
from cossl_analysis.external import from_module

TOL = 1e-5


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Norm gains and biases (and BatchNorm statistics) away from their identity values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + 0.2 * torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _without_final_linear(model: nn.Module, name: str) -> nn.Module:
    """A copy of ``model`` whose final classification layer ``name`` is the identity: its output is
    its own pre-classifier representation."""
    ref = copy.deepcopy(model)
    ref.set_submodule(name, nn.Identity())
    return ref.eval()


# family -> (builder, the final linear layer's name, input side)
TORCHVISION: dict[str, tuple[Callable[[], nn.Module], str, int]] = {
    "ResNet": (lambda: torchvision.models.resnet18(), "fc", 64),
    "RegNet": (lambda: torchvision.models.regnet_x_400mf(), "fc", 64),
    "GoogLeNet": (lambda: torchvision.models.googlenet(init_weights=False, aux_logits=False), "fc", 64),
    "Inception3": (lambda: torchvision.models.inception_v3(init_weights=False, aux_logits=False), "fc", 80),
    "EfficientNet": (lambda: torchvision.models.efficientnet_b0(), "classifier.1", 64),
    "MobileNetV2": (lambda: torchvision.models.mobilenet_v2(), "classifier.1", 64),
    "MobileNetV3": (lambda: torchvision.models.mobilenet_v3_small(), "classifier.3", 64),
    "MNASNet": (lambda: torchvision.models.mnasnet0_5(), "classifier.1", 64),
    "ShuffleNetV2": (lambda: torchvision.models.shufflenet_v2_x0_5(), "fc", 64),
    "DenseNet": (lambda: torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16,
                                                     bn_size=2), "classifier", 32),
    "ConvNeXt": (lambda: torchvision.models.ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]),
                 "classifier.2", 32),
    "SwinTransformer": (lambda: torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2]), "head", 32),
    "VisionTransformer": (lambda: torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16), "heads.head", 32),
    "VisionTransformer with pre-logits": (lambda: torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16, representation_size=8),
        "heads.head", 32),
}


@pytest.mark.parametrize("family", list(TORCHVISION))
def test_torchvision_global_is_the_models_own_pre_classifier_representation(family: str) -> None:
    build, last, side = TORCHVISION[family]
    torch.manual_seed(0)
    model = _randomise_norms(build())
    ref = _without_final_linear(model, last)
    enc = from_module(model, resolution=side)
    x = torch.rand(2, 3, side, side)
    with torch.no_grad():
        own = ref(enc.normalize(x))
        mine = enc.embed(x)
        pooled = enc.pool(enc(x))
    assert own.shape == mine.shape == pooled.shape
    assert (mine - own).abs().max() <= TOL, family
    assert (pooled - own).abs().max() <= TOL, family
    assert enc.num_features == own.shape[1]


def test_densenet_map_is_after_its_final_relu() -> None:
    torch.manual_seed(0)
    model = _randomise_norms(torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16,
                                                         bn_size=2))
    enc = from_module(model, resolution=32)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc(x), torch.relu(model.features(enc.normalize(x))))


def test_torchvision_models_without_global_pooling_are_refused() -> None:
    torch.manual_seed(0)
    vgg = torchvision.models.VGG(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), num_classes=3,
                                 init_weights=False)
    with pytest.raises(AnalysisError, match="no global representation"):
        from_module(vgg, resolution=32)
    enc = from_module(vgg, resolution=32, layer="features")  # a named layer still gives a map
    assert enc(torch.rand(1, 3, 32, 32)).shape == (1, 8, 32, 32)


def _swin_tv() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_norms(torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1],
                                                               num_heads=[1, 1], window_size=[2, 2]))


@pytest.mark.parametrize("layer, stages", [("features.1", 2), ("features.2", 3), ("features.0", 1)])
def test_a_torchvision_swin_stage_read_by_name_is_the_stage_output_permuted(layer: str, stages: int) -> None:
    model = _swin_tv()
    enc = from_module(model, layer=layer, resolution=32)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        stage = model.features[:stages](enc.normalize(x))  # (B, h, w, C): channels last
        fmap = enc(x)
    assert stage.dim() == 4 and stage.shape[1] == stage.shape[2] != stage.shape[3]
    assert torch.equal(fmap, stage.permute(0, 3, 1, 2))
    assert enc.map_channels == stage.shape[3]


def test_a_convolution_inside_a_swin_is_read_channels_first() -> None:
    model = _swin_tv()
    enc = from_module(model, layer="features.0.0", resolution=32)  # the patch embedding's Conv2d
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc(x), model.features[0][0](enc.normalize(x)))


def test_a_timm_swin_stage_read_by_name_is_the_stage_output_permuted() -> None:
    torch.manual_seed(0)
    model = _randomise_norms(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0,
                                               img_size=32, window_size=4, embed_dim=16, depths=(1, 1),
                                               num_heads=(1, 1)))
    x = torch.rand(2, 3, 32, 32)
    enc = from_module(model, layer="layers.0")
    with torch.no_grad():
        stage = model.layers[0](model.patch_embed(enc.normalize(x)))
        assert torch.equal(enc(x), stage.permute(0, 3, 1, 2))
    whole = from_module(model)
    with torch.no_grad():
        feats = model.forward_features(whole.normalize(x))
        assert torch.equal(whole(x), feats.permute(0, 3, 1, 2))
        own = model.forward_head(feats, pre_logits=True)
        assert (whole.embed(x) - own).abs().max() <= TOL


def _vit(**kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    name = str(kwargs.pop("name", "vit_tiny_patch16_224"))
    model = timm.create_model(name, pretrained=False, num_classes=0, img_size=32, patch_size=8, depth=1, **kwargs)
    return _randomise_norms(model)


TIMM_POOLS: dict[str, dict[str, object]] = {
    "token": {"global_pool": "token"},
    "avg": {"global_pool": "avg"},
    "max": {"global_pool": "max"},
    "avgmax": {"global_pool": "avgmax"},
    "map without a class token": {"global_pool": "map", "class_token": False},
    "map with a class token": {"global_pool": "map"},
    "avg with register tokens": {"global_pool": "avg", "reg_tokens": 4},
    "distilled DeiT": {"name": "deit_tiny_distilled_patch16_224"},
}


@pytest.mark.parametrize("case", list(TIMM_POOLS))
def test_timm_vit_global_is_its_own_forward_head(case: str) -> None:
    model = _vit(**dict(TIMM_POOLS[case]))
    enc = from_module(model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(enc.normalize(x))
        own = model.forward_head(tokens, pre_logits=True)
        mine = enc.embed(x)
        fmap = enc(x)
        pooled = enc.pool(fmap)
    prefix = model.num_prefix_tokens
    assert torch.equal(fmap.flatten(2).transpose(1, 2), tokens[:, prefix:])
    assert (mine - own).abs().max() <= TOL, case
    assert (pooled - own).abs().max() <= TOL, case
    assert enc.poolable_subsets == (case in ("avg", "avg with register tokens"))


def test_distilled_deit_global_names_both_tokens() -> None:
    enc = from_module(_vit(name="deit_tiny_distilled_patch16_224"))
    assert enc.global_description == "mean of the class and distillation tokens"
    assert "class and distillation tokens dropped" in enc.map_description
    enc.global_pool = "token"  # the class token alone, on request
    model = enc.net
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc.embed(x), model.forward_features(enc.normalize(x))[:, 0])


@pytest.mark.parametrize("pool, what", [("token", "class token"), ("max", "max over the patch tokens")])
def test_patch_dropping_refuses_a_global_that_is_not_the_mean_of_positions(pool: str, what: str) -> None:
    enc = from_module(_vit(global_pool=pool))
    images = torch.rand(4, 3, 32, 32)
    with pytest.raises(AnalysisError, match=f"is {what}.*cannot be re-pooled from a subset"):
        patch_drop_analysis(enc, images, fractions=[0.0, 0.5])
    enc.global_pool = "mean"  # asked for: the mean of the patch tokens (then fc_norm) re-pools
    result = patch_drop_analysis(enc, images, fractions=[0.0, 0.5])
    assert result.cosine_mean[0] == pytest.approx(1.0, abs=1e-6) and result.cosine_mean[1] < 1.0
