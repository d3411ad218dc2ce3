"""Backbones: output shapes, the RF calculator against a gradient probe, presets, defaults, counts.

Networks run at width 8 so the whole file stays fast on CPU; width-64 facts (parameter counts,
torchvision layout) are checked on the ``meta`` device, without memory or compute.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
import torch
import torchvision
from torch import nn

from cossl_train.backbones import (
    ALL_PRESETS,
    PRESETS,
    ReceptiveField,
    backbone_defaults,
    backbone_info,
    build_backbone,
    count_parameters,
    gradient_rf_probe,
    list_backbones,
    output_size,
    receptive_field,
)
from cossl_train.backbones.rf_presets import Preset
from cossl_train.backbones.rf_resnet import RFResNet, RFResNet18, RFResNetSpec, as_spec
from cossl_train.cli import main as cli_main
from cossl_train.encoder import Encoder, global_pool

WIDTH = 8
NAMES = list_backbones()
RESNETS = ["resnet18", "resnet50"]
#: the small-image presets and the image side each is meant for (all other backbones: 224)
SMALL_PRESETS = {"rf_resnet18_rf13": 32, "rf_resnet18_rf17": 32, "rf_resnet18_rf29": 64, "rf_resnet18_rf45": 64}
#: presets chosen by the "most 3x3 blocks" rule (the Figure 2 sweep predates it)
RULE_PRESETS = [name for name in ALL_PRESETS if name not in PRESETS]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Tiny tensors: intra-op threads cost more than they save, and on a shared, oversubscribed CPU
    # every OpenMP barrier waits for descheduled threads (measured here: a width-8 ResNet-50
    # forward at 64 px took 2-4 s with 2 threads, 0.02 s with 1). Restored after this module.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _probe_geometry(net: nn.Module, rf: ReceptiveField) -> tuple[int, int]:
    """Smallest input side N, and an output position p, such that the RFs of positions p and p + 1
    lie entirely inside the image (so zero padding cannot clip the measured span)."""
    p = max(0, -(rf.start // rf.jump))  # first position whose RF starts at pixel >= 0
    n = rf.span(p + 1)[1] + 1
    while output_size(net, n) < p + 2:  # the map must reach position p + 1
        n += 1
    return n, p


def _is_basic(name: str) -> bool:
    return name == "resnet18" or name.startswith("rf_resnet18_")


def _closed_form_rf(basic: bool, small_image: bool, spec: RFResNetSpec) -> int:
    """Hand-written RF of an RF-ResNet: stem RF and jump, then per 3x3 block one (bottleneck: the
    middle conv, before its stride) or two (basic: before and after the stride) 3x3 convs, each
    adding 2 * jump; 1x1 blocks only multiply the jump by their stride."""
    size, jump = (3, 1) if small_image else ((11, 4) if spec.maxpool else (7, 2))
    for i, (n, k) in enumerate(zip(spec.blocks, spec.kernel3, strict=True)):
        stride = 1 if i == 0 else spec.strides[i - 1]
        for j in range(n):
            s = stride if j == 0 else 1
            if j < k:
                size += 2 * jump * (1 + s) if basic else 2 * jump
            jump *= s
    return size


def _pointwise_savings(basic: bool, small_image: bool, spec: RFResNetSpec, width: int = 64) -> int:
    """Parameters saved against the full ResNet by the 1x1 blocks (a 3x3 conv has 9x a 1x1's
    weights) and by the small-image stem (3x3 instead of 7x7 first conv)."""
    saved = 3 * width * (49 - 9) if small_image else 0
    inplanes = width
    for i, (n, k) in enumerate(zip(spec.blocks, spec.kernel3, strict=True)):
        planes = width * 2**i
        for j in range(n):
            cin = inplanes if j == 0 else planes * (1 if basic else 4)
            if j >= k:  # basic: conv1 (cin -> planes) and conv2 (planes -> planes); bottleneck: conv2
                saved += 8 * (cin * planes + planes * planes) if basic else 8 * planes * planes
        inplanes = planes * (1 if basic else 4)
    return saved


def test_registry_lists_all_families() -> None:
    assert NAMES[:2] == RESNETS
    assert "bagnet33" in NAMES
    assert set(PRESETS) <= set(ALL_PRESETS) <= set(NAMES)
    assert len(PRESETS) == 7  # the Figure 2 sweep of the grid
    assert set(SMALL_PRESETS) <= set(ALL_PRESETS)
    assert {"rf_resnet18_rf29", "rf_resnet50_rf99"} <= set(ALL_PRESETS)


def test_unknown_name_is_a_one_line_error() -> None:
    with pytest.raises(ValueError) as err:
        build_backbone("xyz")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("unknown backbone 'xyz'; available: ")
    assert all(name in msg for name in NAMES)
    with pytest.raises(ValueError, match="unknown backbone 'xyz'"):
        backbone_info("xyz")
    with pytest.raises(ValueError, match="unknown backbone 'xyz'"):
        backbone_defaults("xyz")


def test_bad_width_and_small_image_bagnet_refused() -> None:
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet18", width=0)
    for call in (lambda: build_backbone("bagnet33", small_image=True, width=WIDTH),
                 lambda: backbone_info("bagnet33", small_image=True)):
        with pytest.raises(ValueError, match="small-image") as err:
            call()
        assert "\n" not in str(err.value) and "bagnet33" in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name: str) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, width=WIDTH).eval()
    assert net.num_features == 8 * WIDTH * (1 if _is_basic(name) else 4)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    side = output_size(net, 64)
    # stride 32 -> 2; BagNet-33 (valid convs, stride 8) -> 4; small-image stem (stride 8) -> 8
    assert side == (4 if name == "bagnet33" else 8 if name in SMALL_PRESETS else 2)
    assert out.shape == (2, net.num_features, side, side)
    assert torch.isfinite(out).all()
    # the input size each is meant for: a forward on the meta device gives real shapes at no cost
    size = SMALL_PRESETS.get(name, 224)
    with torch.device("meta"):
        out = build_backbone(name, width=WIDTH)(torch.empty(1, 3, size, size))
    side = {32: 4, 64: 8, 224: 24 if name == "bagnet33" else 7}[size]
    assert out.shape == (1, net.num_features, side, side)
    info = backbone_info(name, width=WIDTH)
    assert info["input_size"] == size and info["feature_size"] == side


@pytest.mark.parametrize("name", RESNETS)
def test_small_image_stem_32px_gives_4x4(name: str) -> None:
    net = build_backbone(name, small_image=True, width=WIDTH).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, net.num_features, 4, 4)
    assert backbone_info(name, small_image=True, input_size=32)["feature_size"] == 4


# every registered backbone with its own stem, plus forced stems and non-preset RF-ResNets of both
# families that use the other knobs: no max-pool, other n, a stride-1 layer and strided 1x1 blocks
_PROBE_CASES = [(name, None) for name in NAMES] + [
    ("resnet18", True),
    ("resnet50", True),
    ("rf_resnet50_rf107", True),
    ("rf_resnet18_rf29", False),
    ("rf_resnet18_rf99", True),
    ("custom50", None),
    ("custom18", None),
]
_CUSTOM_SPEC = as_spec(blocks=(2, 1, 3, 2), maxpool=False, strides=(2, 1, 2), kernel3=(1, 0, 2, 1))


@pytest.mark.parametrize(("name", "small_image"), _PROBE_CASES)
def test_rf_calculator_matches_gradient_probe(name: str, small_image: bool | None) -> None:
    torch.manual_seed(0)
    if name.startswith("custom"):
        net = (RFResNet18 if name == "custom18" else RFResNet)(_CUSTOM_SPEC, width=WIDTH)
    else:
        net = build_backbone(name, small_image=small_image, width=WIDTH)
    rf = receptive_field(net)
    size, p = _probe_geometry(net, rf)
    # rows probe position p and columns position p + 1: the row span checks size and start, the
    # shift between the two spans checks the jump, all with one backward pass
    rows, cols = gradient_rf_probe(net, size, position=(p, p + 1))
    assert rows == rf.span(p), (name, rf, size, p)
    assert cols == rf.span(p + 1), (name, rf, size, p)
    assert rows[1] - rows[0] + 1 == rf.size
    assert cols[0] - rows[0] == rf.jump


def test_calculator_on_a_hand_computed_chain() -> None:
    # dilation 2 ('same' padding) -> RF 5; 2x2/2 max-pool -> 6, jump 2; 5x5/2 conv -> 6 + 4 * 2 = 14
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same", dilation=2),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(4, 4, 5, stride=2, padding=2),
    )
    rf = receptive_field(net)
    assert rf == ReceptiveField(size=14, jump=4, start=-6)
    assert output_size(net, 40) == net(torch.zeros(1, 3, 40, 40)).shape[-1] == 10
    assert gradient_rf_probe(net, 40, position=(4, 5)) == (rf.span(4), rf.span(5))


def test_probe_leaves_the_network_untouched() -> None:
    net = build_backbone("resnet18", small_image=True, width=WIDTH)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    gradient_rf_probe(net, 32)
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_known_receptive_fields() -> None:
    assert receptive_field(build_backbone("resnet50", width=WIDTH)) == ReceptiveField(427, 32, -213)
    assert receptive_field(build_backbone("resnet18", width=WIDTH)) == ReceptiveField(435, 32, -217)
    # valid padding: every pixel of the RF is inside the image, so output 0 starts at pixel 0
    assert receptive_field(build_backbone("bagnet33", width=WIDTH)) == ReceptiveField(33, 8, 0)
    # 'same' padding: position 0's RF is centred on pixel 0 (small stem, jump 8)
    assert receptive_field(build_backbone("rf_resnet18_rf29", width=WIDTH)) == ReceptiveField(29, 8, -14)


@pytest.mark.parametrize("name", [*ALL_PRESETS, "custom50", "custom18"])
def test_calculator_matches_closed_form_on_both_stems(name: str) -> None:
    preset = ALL_PRESETS.get(name) or Preset(RFResNet18 if name == "custom18" else RFResNet, _CUSTOM_SPEC)
    basic = preset.family is RFResNet18
    for small_image in (False, True):
        with torch.device("meta"):
            net = preset.family(preset.spec, width=WIDTH, small_image=small_image)
        assert receptive_field(net).size == _closed_form_rf(basic, small_image, preset.spec), (name, small_image)


@pytest.mark.parametrize("name", list(ALL_PRESETS))
def test_every_preset_name_carries_its_rf(name: str) -> None:
    info = backbone_info(name)
    family = "18" if ALL_PRESETS[name].family is RFResNet18 else "50"
    assert name == f"rf_resnet{family}_rf{info['rf']}"
    assert info["small_image"] is (name in SMALL_PRESETS)
    # total stride 8 with the small stem (32 px -> 4 x 4 for the demo), 32 with the ImageNet stem
    assert info["jump"] == (8 if name in SMALL_PRESETS else 32)
    assert info["feature_size"] >= 4


def test_paper_presets() -> None:
    tiny = backbone_info("rf_resnet18_rf29")  # Tiny-ImageNet: 29 px of a 64 px image
    assert (tiny["rf"], tiny["input_size"], tiny["feature_size"], tiny["stem"]) == (29, 64, 8, "small")
    imagenet = backbone_info("rf_resnet50_rf99")  # ImageNet: 99 px, 7 x 7 at 224 px
    assert (imagenet["rf"], imagenet["input_size"], imagenet["feature_size"]) == (99, 224, 7)
    assert imagenet["stem"] == "imagenet" and imagenet["num_features"] == 2048
    # the demo's 32 px presets: RF 40-55 % of the side, a 4 x 4 map
    for name in ("rf_resnet18_rf13", "rf_resnet18_rf17"):
        info = backbone_info(name)
        assert info["input_size"] == 32 and info["feature_size"] == 4 and 0.4 <= info["rf"] / 32 <= 0.55


@pytest.mark.parametrize("name", RULE_PRESETS)
def test_preset_has_the_most_3x3_blocks_for_its_rf(name: str) -> None:
    # the documented rule, re-derived by enumerating every kernel3 with the closed form
    preset = ALL_PRESETS[name]
    basic, spec = preset.family is RFResNet18, preset.spec
    target = _closed_form_rf(basic, preset.small_image, spec)
    specs = (RFResNetSpec(spec.blocks, spec.maxpool, spec.strides, k)
             for k in itertools.product(*(range(n + 1) for n in spec.blocks)))
    same_rf = [s.kernel3 for s in specs if _closed_form_rf(basic, preset.small_image, s) == target]
    best = min(same_rf, key=lambda k: (-sum(k), tuple(-v for v in k)))
    assert spec.kernel3 == best, (name, same_rf)


def test_preset_names_match_calculator_and_span_the_range() -> None:
    sizes = []
    for name in PRESETS:
        info = backbone_info(name)
        assert name == f"rf_resnet50_rf{info['rf']}"
        assert int(re.search(r"rf(\d+)$", name).group(1)) == info["rf"]
        assert info["jump"] == 32 and info["feature_size"] == 7
        sizes.append(info["rf"])
    assert sizes == sorted(sizes) and len(sizes) >= 6
    assert sizes[0] < 50 and sizes[-1] == 427
    # roughly geometric: no neighbouring pair more than 2x apart
    assert all(b / a <= 2 for a, b in zip(sizes, sizes[1:], strict=False))


def test_rf_does_not_depend_on_depth_beyond_the_3x3_blocks() -> None:
    with torch.device("meta"):
        short = RFResNet(as_spec(blocks=(3, 4, 6, 3), kernel3=(2, 1, 1, 1)), width=WIDTH)
        deep = RFResNet(as_spec(blocks=(5, 6, 9, 4), kernel3=(2, 1, 1, 1)), width=WIDTH)
    assert receptive_field(short) == receptive_field(deep)


@pytest.mark.parametrize("small_image", [False, True])
def test_rf_resnet18_rf_does_not_depend_on_depth_beyond_the_3x3_blocks(small_image: bool) -> None:
    kernel3 = (2, 1, 1, 0)
    with torch.device("meta"):
        short = RFResNet18(as_spec(blocks=(2, 2, 2, 2), kernel3=kernel3), width=WIDTH, small_image=small_image)
        deep = RFResNet18(as_spec(blocks=(4, 3, 5, 2), kernel3=kernel3), width=WIDTH, small_image=small_image)
        more3x3 = RFResNet18(as_spec(blocks=(4, 3, 5, 2), kernel3=(3, 1, 1, 0)), width=WIDTH, small_image=small_image)
    assert len(list(deep.modules())) > len(list(short.modules()))
    assert receptive_field(short) == receptive_field(deep)
    # one more 3x3 block in layer1 (two 3x3 convs at the stem's jump) widens the RF by 4 jumps
    jump = 1 if small_image else 4
    assert receptive_field(more3x3).size == receptive_field(deep).size + 4 * jump


def test_full_rf_resnet18_is_resnet18() -> None:
    with torch.device("meta"):
        ours = RFResNet18()
        ref = torchvision.models.resnet18(weights=None)
        small = RFResNet18(small_image=True)
    ref_shapes = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == ref_shapes
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in ref.named_modules() if n not in ("avgpool", "fc")]
    assert receptive_field(ours) == receptive_field(build_backbone("resnet18", width=WIDTH))  # RF 435
    assert receptive_field(small).size == 109  # ResNet-18 with the small stem


@pytest.mark.parametrize("name", RULE_PRESETS)
def test_preset_parameter_count(name: str) -> None:
    # independent count: the full torchvision network minus what the 1x1 blocks and the stem save
    preset = ALL_PRESETS[name]
    basic = preset.family is RFResNet18
    full = 11_176_512 if basic else 23_508_032  # resnet18 / resnet50 without fc, torchvision
    expected = full - _pointwise_savings(basic, preset.small_image, preset.spec)
    assert backbone_info(name)["params"] == expected


def test_full_rf_resnet_is_resnet50() -> None:
    with torch.device("meta"):
        rf = build_backbone("rf_resnet50_rf427")
        r50 = build_backbone("resnet50")
    assert receptive_field(rf) == receptive_field(r50)
    assert {k: v.shape for k, v in rf.state_dict().items()} == {k: v.shape for k, v in r50.state_dict().items()}


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_matches_torchvision_layout_at_width_64(name: str) -> None:
    with torch.device("meta"):
        ours = build_backbone(name).state_dict()
        ref = getattr(torchvision.models, name)(weights=None).state_dict()
    ref = {k: v.shape for k, v in ref.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == ref


def test_bagnet_parameter_count_close_to_resnet50() -> None:
    info = backbone_info("bagnet33")
    with torch.device("meta"):
        r50 = count_parameters(build_backbone("resnet50"))
    assert info["resnet50_params"] == r50 == 23_508_032
    assert info["params"] == 16_261_184
    # same channels and depth as ResNet-50, but 12 of its 16 middle convs are 1x1: 69% of the
    # parameters (the original BagNet-33 has the same 16.3 M without its classifier)
    assert 0.65 <= info["params"] / r50 <= 1.0
    assert info["rf"] == 33 and info["num_features"] == 2048


def test_small_image_none_true_false() -> None:
    # None: the backbone's own stem; True / False force one (the RF then leaves the name)
    cases = {
        ("resnet18", None): (435, 7), ("resnet18", False): (435, 7), ("resnet18", True): (109, 3),
        ("rf_resnet18_rf29", None): (29, 3), ("rf_resnet18_rf29", True): (29, 3),
        ("rf_resnet18_rf29", False): (11 + 16 + 16 + 24 + 48, 7),
        ("rf_resnet50_rf99", None): (99, 7), ("rf_resnet50_rf99", True): (25, 3),
        ("bagnet33", None): (33, 1), ("bagnet33", False): (33, 1),
    }
    for (name, small_image), (rf, stem_kernel) in cases.items():
        with torch.device("meta"):
            net = build_backbone(name, small_image=small_image, width=WIDTH)
        first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
        assert (receptive_field(net).size, first.kernel_size[0]) == (rf, stem_kernel), (name, small_image)
        info = backbone_info(name, small_image, width=WIDTH)
        assert info["rf"] == rf
        assert info["small_image"] is (backbone_defaults(name)["small_image"] if small_image is None else small_image)
    # default input size: the preset's with its own stem, else 32 (small stem) or 224 (ImageNet stem)
    assert backbone_info("rf_resnet18_rf29")["input_size"] == 64
    assert backbone_info("rf_resnet18_rf29", False)["input_size"] == 224
    assert backbone_info("resnet18", True)["input_size"] == 32
    assert backbone_info("resnet18", True)["feature_size"] == 4
    assert backbone_info("resnet18", True, input_size=224)["feature_size"] == 28


def test_backbone_defaults() -> None:
    for name in NAMES:
        defaults = backbone_defaults(name)
        assert defaults == {"small_image": name in SMALL_PRESETS, "pool_mlp": name in ALL_PRESETS,
                            "small_image_available": name != "bagnet33"}, name
        info = backbone_info(name, width=WIDTH)
        assert (info["small_image"], info["pool_mlp"]) == (defaults["small_image"], defaults["pool_mlp"])
    assert backbone_defaults("rf_resnet50_rf427")["pool_mlp"]  # ResNet-50's layout, but a preset
    assert not backbone_defaults("resnet50")["pool_mlp"] and not backbone_defaults("bagnet33")["pool_mlp"]


def test_pool_mlp_params() -> None:
    # Linear(C, C) + BN(C) + Linear(C, C): 2 C^2 weights, 2 C biases, 2 C BN affine parameters
    for name, channels in (("resnet18", 512), ("rf_resnet18_rf29", 512), ("rf_resnet50_rf99", 2048)):
        assert backbone_info(name)["pool_mlp_params"] == 2 * channels**2 + 4 * channels
    assert backbone_info("rf_resnet18_rf13", width=WIDTH)["pool_mlp_params"] == 2 * 64**2 + 4 * 64


def test_cli_lists_every_backbone(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["backbones"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["name", "stem", "RF"]
    assert [ln.split()[0] for ln in lines] == NAMES
    for ln in lines:
        name, stem, rf, jump, features, size, side, params, with_mlp = ln.split()
        if name in ALL_PRESETS:
            assert int(rf) == int(name.rsplit("rf", 1)[1])
            mlp = 2 * int(features) ** 2 + 4 * int(features)
            assert abs(float(with_mlp) - float(params) - mlp / 1e6) <= 0.011
        else:
            assert with_mlp == "-"
        assert stem == ("small" if name in SMALL_PRESETS else "bagnet" if name == "bagnet33" else "imagenet")
        assert int(size) == SMALL_PRESETS.get(name, 224)
        expected_side = {32: 4, 64: 8}.get(int(size), 24 if name == "bagnet33" else 7)
        assert side == f"{expected_side}x{expected_side}"
    assert cli_main(["backbones", "--small-image"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [ln.split()[0] for ln in lines] == [n for n in NAMES if n != "bagnet33"]
    assert all(ln.split()[1] == "small" for ln in lines)
    assert lines[0].split()[2] == "109"  # ResNet-18 with the small stem


def test_backbone_info_fields() -> None:
    info = backbone_info("resnet50")
    assert info["rf"] == 427 and info["jump"] == 32 and info["start"] == -213
    assert info["params"] == 23_508_032 and info["num_features"] == 2048 and info["feature_size"] == 7
    small = backbone_info("resnet18", small_image=True, width=WIDTH, input_size=32)
    assert small["jump"] == 8 and small["feature_size"] == 4 and small["num_features"] == 8 * WIDTH


def test_encoder_contract() -> None:
    enc = Encoder(build_backbone("resnet18", small_image=True, width=WIDTH), (0.5,) * 3, (0.25,) * 3)
    fmap = enc(torch.rand(2, 3, 32, 32))
    assert fmap.shape == (2, enc.num_features, 4, 4)
    assert global_pool(fmap).shape == (2, enc.num_features)
