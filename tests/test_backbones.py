"""Backbones: output shapes, the RF calculator against a gradient probe, presets, parameter counts.

Networks run at width 8 so the whole file stays fast on CPU; width-64 facts (parameter counts,
torchvision layout) are checked on the ``meta`` device, without memory or compute.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import torch
import torchvision
from torch import nn

from cossl_train.backbones import (
    PRESETS,
    ReceptiveField,
    backbone_info,
    build_backbone,
    count_parameters,
    gradient_rf_probe,
    list_backbones,
    output_size,
    receptive_field,
)
from cossl_train.backbones.rf_resnet import RFResNet, as_spec
from cossl_train.encoder import Encoder, global_pool

WIDTH = 8
NAMES = list_backbones()
RESNETS = ["resnet18", "resnet50"]


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


def test_registry_lists_all_families() -> None:
    assert NAMES[:2] == RESNETS
    assert "bagnet33" in NAMES
    assert set(PRESETS) <= set(NAMES)


def test_unknown_name_is_a_one_line_error() -> None:
    with pytest.raises(ValueError) as err:
        build_backbone("xyz")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("unknown backbone 'xyz'; available: ")
    assert all(name in msg for name in NAMES)
    with pytest.raises(ValueError, match="unknown backbone 'xyz'"):
        backbone_info("xyz")


def test_bad_width_and_small_image_bagnet_refused() -> None:
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet18", width=0)
    with pytest.raises(ValueError, match="small-image"):
        build_backbone("bagnet33", small_image=True, width=WIDTH)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name: str) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, width=WIDTH).eval()
    expansion = 1 if name == "resnet18" else 4
    assert net.num_features == 8 * WIDTH * expansion
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    side = output_size(net, 64)  # 2 for the stride-32 nets, 4 for BagNet-33 (valid convs, stride 8)
    assert side == (4 if name == "bagnet33" else 2)
    assert out.shape == (2, net.num_features, side, side)
    assert torch.isfinite(out).all()
    # 224 px: a forward on the meta device gives real shapes at no compute cost
    with torch.device("meta"):
        out = build_backbone(name, width=WIDTH)(torch.empty(1, 3, 224, 224))
    side = 24 if name == "bagnet33" else 7
    assert out.shape == (1, net.num_features, side, side)
    assert backbone_info(name, width=WIDTH)["feature_size"] == side


@pytest.mark.parametrize("name", RESNETS)
def test_small_image_stem_32px_gives_4x4(name: str) -> None:
    net = build_backbone(name, small_image=True, width=WIDTH).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, net.num_features, 4, 4)
    assert backbone_info(name, small_image=True, input_size=32)["feature_size"] == 4


# every registered backbone, plus the small-image stems and a non-preset RF-ResNet that uses the
# other knobs: no max-pool, n != (3, 4, 6, 3), a stride-1 layer and a strided 1x1 first block
_PROBE_CASES = [(name, False) for name in NAMES] + [
    ("resnet18", True),
    ("resnet50", True),
    ("rf_resnet50_rf107", True),
    ("custom", False),
]


@pytest.mark.parametrize(("name", "small_image"), _PROBE_CASES)
def test_rf_calculator_matches_gradient_probe(name: str, small_image: bool) -> None:
    torch.manual_seed(0)
    if name == "custom":
        spec = as_spec(blocks=(2, 1, 3, 2), maxpool=False, strides=(2, 1, 2), kernel3=(1, 0, 2, 1))
        net = RFResNet(spec, width=WIDTH)
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
