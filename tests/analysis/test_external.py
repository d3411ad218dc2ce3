"""External models (torchvision, timm, callables) as encoders of the analysis layer.

Every model is built with random weights and every weights file is written here: nothing is
downloaded. Resolutions are kept small (32-64 px) so the file runs in seconds.
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from captum.attr import Saliency
from torch import Tensor, nn

from cossl_analysis import erf_map
from cossl_analysis.errors import AnalysisError
from cossl_analysis.external import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExternalEncoder,
    from_module,
    load_external,
    min_resolution,
    parse_spec,
    require_map_size,
    require_poolable_subsets,
)
from cossl_train.encoder import Normalize, pool_features, pool_head

StateDict = dict[str, Tensor]


def prefixed(sd: StateDict, prefix: str) -> StateDict:
    return {prefix + k: v for k, v in sd.items()}


def trunk_of(sd: StateDict) -> StateDict:
    """A torchvision ResNet's state_dict without its classifier (what SSL code keeps)."""
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def projector(width: int) -> StateDict:
    return {"0.weight": torch.randn(8, width), "0.bias": torch.randn(8), "2.weight": torch.randn(4, 8)}


@pytest.fixture(scope="module")
def resnets() -> dict[str, tuple[StateDict, StateDict]]:
    """{arch: (state_dict with fc, a different state_dict of the same shapes: a momentum twin)}.

    To keep the files small, ResNet-50's weights are half precision (as some published files are;
    loading casts them) and its twin shares their memory (torch.save stores it once); ResNet-18's
    twin is really different, so that the choice between the two is checked.
    """
    out = {}
    for arch in ("resnet18", "resnet50"):
        torch.manual_seed(0)
        sd = torchvision.models.get_model(arch, weights=None).state_dict()
        if arch == "resnet18":
            twin = {k: (v + 1 if v.is_floating_point() else v.clone()) for k, v in sd.items()}
        else:
            sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
            twin = dict(sd)
        out[arch] = (sd, twin)
    return out


# name -> (build the file's object from (state_dict, twin, width), container used, prefix used, dropped groups)
Layout = tuple[Callable[[StateDict, StateDict, int], object], str, str, tuple[str, ...]]
LAYOUTS: dict[str, Layout] = {
    "bare state_dict": (lambda sd, tw, c: sd, "", "", ("fc",)),
    "bare, no classifier": (lambda sd, tw, c: trunk_of(sd), "", "", ()),
    "state_dict + module.": (lambda sd, tw, c: {"state_dict": prefixed(sd, "module."), "epoch": 3},
                             "state_dict", "module.", ("module.fc",)),
    "backbone.": (lambda sd, tw, c: prefixed(sd, "backbone."), "", "backbone.", ("backbone.fc",)),
    "model + backbone. (solo-learn)": (
        lambda sd, tw, c: {"model": {**prefixed(trunk_of(sd), "backbone."), **prefixed(projector(c), "projector.")}},
        "model", "backbone.", ("projector",)),
    "DINO teacher + student": (
        lambda sd, tw, c: {
            "teacher": {**prefixed(trunk_of(sd), "module.backbone."), **prefixed(projector(c), "module.head.mlp.")},
            "student": {**prefixed(trunk_of(tw), "module.backbone."), **prefixed(projector(c), "module.head.mlp.")},
            "epoch": 10, "args": argparse.Namespace(arch="resnet", lr=0.1)},
        "teacher", "module.backbone.", ("module.head",)),
    "DINO student only": (
        lambda sd, tw, c: {"student": prefixed(trunk_of(sd), "module.backbone.")}, "student", "module.backbone.", ()),
    "module.backbone. bare": (lambda sd, tw, c: prefixed(trunk_of(sd), "module.backbone."), "", "module.backbone.",
                              ()),
    "MoCo-v3": (
        lambda sd, tw, c: {"arch": "resnet50", "epoch": 100, "state_dict": {
            **prefixed(trunk_of(sd), "module.base_encoder."), **prefixed(projector(c), "module.base_encoder.fc."),
            **prefixed(trunk_of(tw), "module.momentum_encoder."),
            **prefixed(projector(c), "module.momentum_encoder.fc."), **prefixed(projector(8), "module.predictor.")}},
        "state_dict", "module.base_encoder.",
        ("module.base_encoder.fc", "module.momentum_encoder", "module.predictor")),
    "MoCo v2": (
        lambda sd, tw, c: {"state_dict": {
            **prefixed(trunk_of(sd), "module.encoder_q."), **prefixed(projector(c), "module.encoder_q.fc."),
            **prefixed(trunk_of(tw), "module.encoder_k."), **prefixed(projector(c), "module.encoder_k.fc."),
            "module.queue": torch.randn(4, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}},
        "state_dict", "module.encoder_q.", ("module.encoder_q.fc", "module.encoder_k", "module.queue")),
    "MoCo v1": (
        lambda sd, tw, c: {"state_dict": {**prefixed(sd, "encoder_q."), **prefixed(tw, "encoder_k.")}},
        "state_dict", "encoder_q.", ("encoder_q.fc", "encoder_k")),
    "encoder. + projector + predictor": (
        lambda sd, tw, c: {**prefixed(trunk_of(sd), "encoder."), **prefixed(projector(c), "projector."),
                           **prefixed(projector(8), "predictor.")},
        "", "encoder.", ("projector", "predictor")),
    "online_network container (BYOL)": (
        lambda sd, tw, c: {"online_network": {**prefixed(trunk_of(sd), "encoder."),
                                              **prefixed(projector(c), "projector.")},
                           "target_network": {**prefixed(trunk_of(tw), "encoder.")}},
        "online_network", "encoder.", ("projector",)),
    "online_network.encoder. (BYOL)": (
        lambda sd, tw, c: {**prefixed(trunk_of(sd), "online_network.encoder."),
                           **prefixed(projector(c), "online_network.projector."),
                           **prefixed(projector(8), "online_network.predictor."),
                           **prefixed(trunk_of(tw), "target_network.encoder.")},
        "", "online_network.encoder.", ("online_network.projector", "online_network.predictor", "target_network")),
    "numbered children (nn.Sequential(*children[:-1]))": (
        lambda sd, tw, c: {"online_network_state_dict": {**prefixed(_numbered(trunk_of(sd)), "encoder."),
                                                         **prefixed(projector(c), "projetion.net.")}},
        "online_network_state_dict", "encoder.", ("projetion",)),
}

_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]


def _numbered(sd: StateDict) -> StateDict:
    """Keys as ``nn.Sequential(*list(resnet.children())[:-1])`` names them: '4.0.conv1.weight'."""
    out = {}
    for key, value in sd.items():
        first, _, rest = key.partition(".")
        out[f"{_CHILDREN.index(first)}.{rest}"] = value
    return out


def _messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "cossl_analysis")


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_weights_layouts_map_onto_torchvision_resnets(arch, layout, resnets, tmp_path, caplog):
    sd, twin = resnets[arch]
    build, where, prefix, dropped = LAYOUTS[layout]
    path = tmp_path / "weights.pth"
    torch.save(build(sd, twin, 2048 if arch == "resnet50" else 512), path)
    with caplog.at_level(logging.INFO, logger="cossl_analysis"):
        enc = load_external(f"torchvision:{arch}@{path}", resolution=32)
    loaded = enc.net.state_dict()
    assert set(loaded) == set(trunk_of(sd))
    # the online/teacher/query weights, not the twin's
    assert all(torch.equal(loaded[k], sd[k].to(loaded[k].dtype)) for k in loaded)
    log = _messages(caplog)
    assert f"key prefix {prefix!r}" in log
    assert (f"under {where!r}" in log) if where else ("under" not in log)
    for group in dropped:
        assert f"{group} (" in log, (group, log)
    if not dropped:
        assert "dropped" not in log
    assert enc.weights == path and enc.num_features == (2048 if arch == "resnet50" else 512)


def test_torchvision_resnet_map_pool_and_contract(resnets, tmp_path):
    sd, _ = resnets["resnet18"]
    torch.save(sd, tmp_path / "r18.pth")
    enc = load_external(f"torchvision:resnet18@{tmp_path / 'r18.pth'}", resolution=64)
    ref = torchvision.models.resnet18()
    ref.load_state_dict(sd)
    ref.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        z = Normalize(IMAGENET_MEAN, IMAGENET_STD)(x)
        body = nn.Sequential(*list(ref.children())[:-2])
        fmap = enc(x)
        assert torch.allclose(fmap, body(z), atol=1e-6)
        assert torch.allclose(enc.pool(fmap), torch.flatten(ref.avgpool(body(z)), 1), atol=1e-6)
    assert isinstance(enc, ExternalEncoder) and not enc.training
    assert fmap.shape == (2, 512, 2, 2) and enc.num_features == enc.map_channels == 512
    assert isinstance(enc.head, nn.Identity) and isinstance(pool_head(enc), nn.Identity)
    assert torch.equal(pool_features(enc, fmap), enc.pool(fmap))
    assert enc.stride == 32 and enc.poolable_subsets and enc.global_pool == "mean"
    assert enc.mean == IMAGENET_MEAN and enc.std == IMAGENET_STD
    assert "layer4" in enc.map_description and enc.global_description == "spatial mean of the map"
    assert enc.source in enc.description


def test_from_module_equals_load_external(resnets, tmp_path):
    sd, _ = resnets["resnet18"]
    torch.save({"state_dict": prefixed(sd, "module.")}, tmp_path / "w.pth")
    model = torchvision.models.resnet18()
    model.load_state_dict(sd)
    mine = from_module(model, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), resolution=64)
    loaded = load_external(f"torchvision:resnet18@{tmp_path / 'w.pth'}", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4),
                           resolution=64)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(mine(x), loaded(x))
        assert torch.equal(mine.embed(x), loaded.embed(x))
    assert model.fc.weight.shape == (1000, 512)  # the user's module is left as it was


def test_layer_hook_takes_the_map_and_stops_there(resnets, tmp_path):
    sd, _ = resnets["resnet18"]
    torch.save(sd, tmp_path / "w.pth")
    enc = load_external(f"torchvision:resnet18@{tmp_path / 'w.pth'}", layer="layer3", resolution=64)
    calls = []
    enc.net.layer4.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fmap = enc(x)
        z = enc.normalize(x)
        ref = z
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"):
            ref = getattr(enc.net, name)(ref)
    assert torch.equal(fmap, ref) and fmap.shape == (2, 256, 4, 4)
    assert not calls  # nothing after the layer ran
    assert enc.layer == "layer3" and "layer3" in enc.map_description and isinstance(enc.head, nn.Identity)


class _ScaledNet(nn.Module):
    """A module whose forward does more than run its children in order (a scaling before the pool)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(2 * self.conv(x)).flatten(1))


def test_the_map_is_what_the_model_feeds_its_pooling():
    model = _ScaledNet()
    enc = from_module(model, resolution=16)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(enc(x), 2 * model.conv(enc.normalize(x)))
        assert torch.allclose(model.fc(enc.pool(enc(x))), model(enc.normalize(x)), atol=1e-6)
    assert enc.map_size() == (8, 8) and enc.num_features == 4


def test_timm_resnet_forward_features_and_pretrained_cfg(tmp_path, caplog):
    torch.manual_seed(1)
    ref = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    torch.save({"state_dict": prefixed(ref.state_dict(), "module.")}, tmp_path / "t.pth")
    with caplog.at_level(logging.INFO, logger="cossl_analysis"):
        enc = load_external(f"timm:resnet18@{tmp_path / 't.pth'}", resolution=64)
    assert "module.fc (2)" in _messages(caplog)
    cfg = ref.pretrained_cfg
    assert enc.mean == tuple(cfg["mean"]) and enc.std == tuple(cfg["std"])
    assert load_external("timm:resnet18").resolution == cfg["input_size"][-1] == 224
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = ref.forward_features(Normalize(cfg["mean"], cfg["std"])(x))
        fmap = enc(x)
        assert torch.allclose(fmap, feats, atol=1e-6)
        assert torch.allclose(enc.pool(fmap), ref.forward_head(feats, pre_logits=True), atol=1e-6)
    assert fmap.shape == (2, 512, 2, 2) and isinstance(enc.head, nn.Identity) and enc.num_features == 512


def test_timm_convnext_keeps_its_pre_logits_head_and_copies(tmp_path):
    torch.manual_seed(4)
    ref = timm.create_model("convnext_atto", pretrained=False, num_classes=10).eval()
    with torch.no_grad():
        ref.head.norm.weight.normal_(1.0, 0.5)  # a head norm that is not the identity
    torch.save(ref.state_dict(), tmp_path / "c.pth")
    enc = load_external(f"timm:convnext_atto@{tmp_path / 'c.pth'}", resolution=64)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        feats = ref.forward_features(enc.normalize(x))
        fmap = enc(x)
        assert torch.allclose(fmap, feats, atol=1e-5)
        assert torch.allclose(enc.pool(fmap), ref.forward_head(feats, pre_logits=True), atol=1e-5)
    assert "pre-logits head" in enc.global_description and enc.poolable_subsets
    assert enc.state_dict().keys() == {"normalize.mean", "normalize.std", *(f"net.{k}" for k in enc.net.state_dict())}
    twin = copy.deepcopy(enc)
    assert twin.head._module is twin.net  # the copy's head follows the copy's network
    with torch.no_grad():
        assert torch.equal(twin.pool(twin(x)), enc.pool(fmap))


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> tuple[nn.Module, Path]:
    """A random tiny timm ViT at 32 px (2x2 patches) and its weights saved as MoCo-v3 writes them."""
    torch.manual_seed(2)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10).eval()
    with torch.no_grad():  # a freshly built LayerNorm has unit gain: the channel sum of its output is constant
        for m in ref.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.5)
                m.bias.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("vit") / "vit.pth"
    torch.save({"state_dict": prefixed(ref.state_dict(), "module.base_encoder.")}, path)
    return ref, path


def _vit_tokens(ref: nn.Module, x: Tensor) -> Tensor:
    cfg = ref.pretrained_cfg
    return ref.forward_features(Normalize(cfg["mean"], cfg["std"])(x))


def test_timm_vit_patch_tokens_as_the_map(vit, caplog):
    ref, path = vit
    with caplog.at_level(logging.INFO, logger="cossl_analysis"):
        enc = load_external(f"timm:vit_tiny_patch16_224@{path}", model_kwargs={"img_size": 32})
    assert "module.base_encoder.head (2)" in _messages(caplog)
    assert enc.resolution == 32 and enc.mean == (0.5, 0.5, 0.5) and enc.stride == 16
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        tokens = _vit_tokens(ref, x)  # (2, 1 + 4, 192)
        fmap = enc(x)
        assert fmap.shape == (2, 192, 2, 2)
        assert torch.allclose(fmap[:, :, 1, 0], tokens[:, 1 + 2], atol=1e-5)  # row-major patch order
        assert torch.allclose(fmap.flatten(2).transpose(1, 2), tokens[:, 1:], atol=1e-5)
        assert torch.allclose(enc.pool(fmap), tokens[:, 0], atol=1e-5)  # the class token, the model's own
        assert torch.allclose(pool_features(enc, fmap), tokens[:, 0], atol=1e-5)
        with pytest.raises(AnalysisError, match="latest forward"):
            enc.pool(fmap.clone())
    assert enc.global_pool == "token" and not enc.poolable_subsets and enc.global_description == "class token"
    enc.embed(x.clone().requires_grad_()).sum().backward()  # the cached token carries a graph: copies drop it
    assert copy.deepcopy(enc).features._last is None and copy.deepcopy(enc).features.net is not enc.net
    assert "class token dropped" in enc.map_description
    with pytest.raises(AnalysisError, match="global_pool='mean'"):
        require_poolable_subsets(enc)

    mean = load_external(f"timm:vit_tiny_patch16_224@{path}", global_pool="mean", model_kwargs={"img_size": 32})
    with torch.no_grad():
        assert torch.allclose(mean.pool(mean(x)), tokens[:, 1:].mean(dim=1), atol=1e-5)
        assert torch.allclose(mean.pool(mean(x)[:, :, :1, :]), tokens[:, 1:3].mean(dim=1), atol=1e-5)
    assert mean.poolable_subsets and mean.global_description == "mean of the patch tokens"
    require_poolable_subsets(mean)
    mean.global_pool = "token"  # switchable after loading
    with torch.no_grad():
        assert torch.allclose(mean.pool(mean(x)), tokens[:, 0], atol=1e-5)
    with pytest.raises(AnalysisError, match="'token' or 'mean'"):
        mean.global_pool = "max"


def test_timm_vit_inner_block_as_layer(vit):
    ref, path = vit
    enc = load_external(f"timm:vit_tiny_patch16_224@{path}", layer="blocks.0", model_kwargs={"img_size": 32})
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        cfg = ref.pretrained_cfg
        t = ref.patch_embed(Normalize(cfg["mean"], cfg["std"])(x))
        t = ref.blocks[0](ref.norm_pre(ref._pos_embed(t)))
        fmap = enc(x)
        assert torch.allclose(fmap.flatten(2).transpose(1, 2), t[:, 1:], atol=1e-5)
        assert torch.allclose(enc.pool(fmap), t[:, 0], atol=1e-5)


def test_erf_of_a_vit_position_equals_captum_saliency_on_its_token(vit):
    ref, path = vit
    enc = load_external(f"timm:vit_tiny_patch16_224@{path}", model_kwargs={"img_size": 32})
    x = torch.rand(2, 3, 32, 32)
    positions = [(0.0, 0.0), (1.0, 0.0)]  # -> map cells (0, 0) and (1, 0): tokens 1 + 0 and 1 + 2
    maps = erf_map(enc, x, positions=positions, average=False)  # (2, 2, 32, 32)
    for p, cell in enumerate((0, 2)):
        token_sum = Saliency(lambda inp, cell=cell: _vit_tokens(ref, inp)[:, 1 + cell].sum(dim=-1))
        expected = token_sum.attribute(x.clone().requires_grad_(), abs=True).sum(dim=1)
        assert torch.allclose(torch.from_numpy(maps[:, p]), expected, rtol=1e-4, atol=1e-7)
        assert expected.abs().sum() > 0


def test_torchvision_vit_from_module():
    torch.manual_seed(3)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2,
                                                 hidden_dim=16, mlp_dim=16).eval()
    enc = from_module(model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = enc.normalize(x)
        t = model._process_input(z)
        t = model.encoder(torch.cat([model.class_token.expand(2, -1, -1), t], dim=1))
        fmap = enc(x)
        assert fmap.shape == (2, 16, 2, 2) and enc.resolution == 32
        assert torch.allclose(fmap.flatten(2).transpose(1, 2), t[:, 1:], atol=1e-6)
        assert torch.allclose(enc.pool(fmap), t[:, 0], atol=1e-6)
        assert torch.allclose(model.heads(enc.pool(fmap)), model(z), atol=1e-5)


def test_map_size_refusal_names_a_resolution_that_works(resnets, tmp_path):
    enc = load_external("torchvision:resnet18", resolution=64)
    assert require_map_size(enc, 64, "similarity") == (2, 2)
    with pytest.raises(AnalysisError) as err:
        require_map_size(enc, 32, "similarity")
    assert "1x1" in str(err.value) and "external.resolution=64" in str(err.value) and "\n" not in str(err.value)
    assert min_resolution(enc) == 64
    dyn = load_external("timm:vit_tiny_patch16_224", model_kwargs={"img_size": 32, "dynamic_img_size": True})
    with pytest.raises(AnalysisError, match="external.resolution=32"):
        require_map_size(dyn, 16, "patch dropping")
    fixed = load_external("timm:vit_tiny_patch16_224", model_kwargs={"img_size": 32})
    with pytest.raises(AnalysisError, match="does not run on 16 px"):
        require_map_size(fixed, 16, "similarity")


def test_callable_specs(resnets, tmp_path):
    sd, _ = resnets["resnet18"]
    torch.save(sd, tmp_path / "w.pth")
    (tmp_path / "mymodels.py").write_text(
        "import torchvision\n\n\ndef build(num_classes=7):\n"
        "    return torchvision.models.resnet18(num_classes=num_classes)\n")
    for spec in (f"{tmp_path / 'mymodels.py'}:build@{tmp_path / 'w.pth'}",
                 f"torchvision.models:resnet18@{tmp_path / 'w.pth'}"):
        enc = load_external(spec, resolution=32)
        assert enc.source == spec and torch.equal(enc.net.state_dict()["layer4.1.conv2.weight"],
                                                  sd["layer4.1.conv2.weight"])


def test_parse_spec():
    s = parse_spec("runs/co_byol/checkpoint.pt")
    assert (s.kind, s.name, s.weights) == ("cossl", "runs/co_byol/checkpoint.pt", None)
    s = parse_spec("torchvision:resnet50@byol_r50.pth")
    assert (s.kind, s.name, s.weights) == ("torchvision", "resnet50", Path("byol_r50.pth"))
    s = parse_spec("timm:vit_small_patch16_224.dino")
    assert (s.kind, s.name, s.weights) == ("timm", "vit_small_patch16_224.dino", None)
    s = parse_spec("torchvision.models:resnet18@w.pt")
    assert (s.kind, s.module, s.function, s.weights) == ("callable", "torchvision.models", "resnet18", Path("w.pt"))


@pytest.fixture(scope="module")
def bad_specs(tmp_path_factory, resnets) -> dict[str, tuple[str, dict, str]]:
    """name -> (spec, load_external options, a piece of the message)."""
    tmp_path = tmp_path_factory.mktemp("bad")
    sd, _ = resnets["resnet18"]
    torch.save(sd, tmp_path / "r18.pth")
    torch.save(torchvision.models.resnet18(), tmp_path / "pickled_module.pth")
    torch.save({"epoch": 3, "arch": "resnet18"}, tmp_path / "no_tensors.pth")
    r18 = tmp_path / "r18.pth"
    return {
        "unknown library": ("hf:facebook/dino-vitb16", {}, "unknown library 'hf'"),
        "unknown library or module": ("nosuchlib_xyz:build", {}, "unknown library or module 'nosuchlib_xyz'"),
        "unknown torchvision model": ("torchvision:resnet5", {}, "unknown torchvision model 'resnet5'"),
        "unknown timm model": ("timm:resnet_nope", {}, "unknown timm model 'resnet_nope'"),
        "missing weights file": (f"torchvision:resnet18@{tmp_path / 'nope.pth'}", {}, "does not exist"),
        "weights that do not fit": (f"torchvision:resnet50@{r18}", {"resolution": 32},
                                    "do not fit torchvision:resnet50"),
        "pickled module": (f"torchvision:resnet18@{tmp_path / 'pickled_module.pth'}", {}, "state_dict()"),
        "no tensors": (f"torchvision:resnet18@{tmp_path / 'no_tensors.pth'}", {"resolution": 32}, "holds no tensors"),
        "layer that does not exist": ("torchvision:resnet18", {"layer": "layer9", "resolution": 32},
                                      "layer 'layer9' does not exist"),
        "layer after the pooling": ("torchvision:resnet18", {"layer": "fc", "resolution": 32},
                                    "is at or after its global pooling"),
        "layer not 4-D (CNN)": ("timm:resnet18", {"layer": "global_pool", "resolution": 32},
                                "gives (1, 512), not a (B, C, h, w)"),
        "layer not 4-D (ViT)": ("timm:vit_tiny_patch16_224", {"layer": "fc_norm", "model_kwargs": {"img_size": 32}},
                                "gives (1, 192), not a (B, C, h, w)"),
        "callable returning no module": ("os:getcwd", {}, "returned a str, not an nn.Module"),
        "callable that does not exist": ("os:no_such_builder", {}, "has no 'no_such_builder'"),
        "token pool on a CNN": ("torchvision:resnet18", {"global_pool": "token", "resolution": 32},
                                "needs a class token"),
        "bad global pool": ("torchvision:resnet18", {"global_pool": "max", "resolution": 32}, "'token' or 'mean'"),
        "wrong input size for a fixed ViT": ("timm:vit_tiny_patch16_224", {"resolution": 64,
                                             "model_kwargs": {"img_size": 32}}, "cannot run on 64 px"),
        "bad model_kwargs": ("torchvision:resnet18", {"model_kwargs": {"no_such_option": 1}}, "cannot build"),
        "a cossl checkpoint": ("runs/x/checkpoint.pt", {}, "load_checkpoint"),
        "empty spec": ("", {}, "empty model spec"),
        "no model name": ("torchvision:", {}, "names no torchvision model"),
        "nothing after @": ("timm:resnet18@", {}, "nothing after '@'"),
        "URL weights": ("torchvision:resnet50@https://example.org/w.pth", {}, "never downloaded"),
    }


BAD = ["unknown library", "unknown library or module", "unknown torchvision model", "unknown timm model",
       "missing weights file", "weights that do not fit", "pickled module", "no tensors", "layer that does not exist",
       "layer after the pooling", "layer not 4-D (CNN)", "layer not 4-D (ViT)", "callable returning no module",
       "callable that does not exist", "token pool on a CNN", "bad global pool", "wrong input size for a fixed ViT",
       "bad model_kwargs", "a cossl checkpoint", "empty spec", "no model name", "nothing after @", "URL weights"]


@pytest.mark.parametrize("case", BAD)
def test_bad_specs_give_one_typed_line(case, bad_specs):
    spec, options, piece = bad_specs[case]
    with pytest.raises(AnalysisError) as err:
        load_external(spec, **options)
    message = str(err.value)
    assert piece in message, message
    assert "\n" not in message and "Traceback" not in message


def test_misfit_names_first_missing_and_unexpected_key_and_prefix(resnets, tmp_path):
    sd, _ = resnets["resnet18"]
    broken = {("layer5" + k[6:] if k.startswith("layer4") else k): v for k, v in sd.items()}
    torch.save({"state_dict": prefixed(broken, "module.")}, tmp_path / "w.pth")
    with pytest.raises(AnalysisError) as err:
        load_external(f"torchvision:resnet18@{tmp_path / 'w.pth'}", resolution=32)
    message = str(err.value)
    assert "first missing key 'layer4.0.conv1.weight'" in message
    assert "first unexpected key 'module.layer5.0.conv1.weight'" in message
    assert "prefix tried: 'module.' under 'state_dict'" in message
