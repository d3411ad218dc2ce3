"""ERF maps against closed forms (linear conv stacks), the theoretical receptive field, and the batched
path against the per-position (captum) path, including its automatic fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d
from torch import nn

from cossl_analysis import DEFAULT_POSITIONS, erf_map, position_indices
from cossl_analysis.analyses.erf import erf_stats, position_index, rf_centres
from cossl_analysis.errors import AnalysisError
from cossl_analysis.report import save_erf
from cossl_train.config import load_config
from cossl_train.encoder import Encoder


def _fixed_conv(c_in: int, c_out: int, k: int, seed: int, **kw) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, k, bias=False, **kw)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(seed)))
    return conv


def _place(kernel_map: np.ndarray, size: int, i: int, j: int) -> np.ndarray:
    """Expected ERF of a valid (unpadded, stride-1) net: the composite kernel at offset (i, j)."""
    out = np.zeros((size, size))
    k = kernel_map.shape[0]
    out[i : i + k, j : j + k] = kernel_map
    return out


def test_position_index_rounds_half_up() -> None:
    assert [position_index(p, 7) for p in (0.0, 0.5, 1.0)] == [0, 3, 6]
    assert position_index(0.5, 8) == 4  # 3.5 -> 4, not banker's 4/3 ambiguity
    assert position_index(0.5, 1) == 0
    assert position_indices(DEFAULT_POSITIONS, 7, 5) == [(0, 0), (0, 2), (3, 0), (3, 2)]
    with pytest.raises(ValueError):
        position_index(1.5, 7)


def test_single_conv_matches_kernel() -> None:
    conv = _fixed_conv(3, 2, 3, seed=0)
    images = torch.rand(3, 3, 10, 10)
    maps = erf_map(conv, images)  # (P, 10, 10), output map 8x8
    w = conv.weight.detach().double().numpy()  # (out, in, k, k)
    # d sum_o z_o[i,j] / d x_c[i+u, j+v] = sum_o W[o, c, u, v]; abs, then sum over c.
    kernel = np.abs(w.sum(axis=0)).sum(axis=0)
    for p, (i, j) in enumerate(position_indices(DEFAULT_POSITIONS, 8, 8)):
        np.testing.assert_allclose(maps[p], _place(kernel, 10, i, j), rtol=1e-5, atol=1e-6)


def test_stacked_convs_match_full_convolution_of_kernels() -> None:
    c1 = _fixed_conv(3, 2, 3, seed=1)
    c2 = _fixed_conv(2, 2, 5, seed=2)
    net = nn.Sequential(c1, c2)
    size = 16  # output 16 - 2 - 4 = 10
    maps = erf_map(net, torch.rand(2, 3, size, size), average=False)  # (B, P, H, W)
    k1 = c1.weight.detach().double().numpy()  # (m, c, 3, 3)
    k2 = c2.weight.detach().double().numpy()  # (o, m, 5, 5)
    # Cross-correlation after cross-correlation = cross-correlation with the full convolution k1 * k2.
    composite = np.zeros((3, 7, 7))
    for c in range(3):
        for o in range(2):
            for m in range(2):
                composite[c] += convolve2d(k1[m, c], k2[o, m], mode="full")
    kernel = np.abs(composite).sum(axis=0)
    for p, (i, j) in enumerate(position_indices(DEFAULT_POSITIONS, 10, 10)):
        for b in range(2):
            np.testing.assert_allclose(maps[b, p], _place(kernel, size, i, j), rtol=1e-5, atol=1e-6)


def test_encoder_normalisation_is_part_of_the_gradient() -> None:
    conv = _fixed_conv(3, 2, 3, seed=3)
    conv.num_features = 2  # the Encoder contract reads backbone.num_features
    std = (0.5, 0.25, 2.0)
    enc = Encoder(conv, mean=(0.1, 0.2, 0.3), std=std)
    maps = erf_map(enc, torch.rand(1, 3, 9, 9), positions=[(0.5, 0.5)])
    w = conv.weight.detach().double().numpy().sum(axis=0)  # (c, k, k)
    kernel = (np.abs(w) / np.asarray(std)[:, None, None]).sum(axis=0)
    np.testing.assert_allclose(maps[0], _place(kernel, 9, 3, 3), rtol=1e-5, atol=1e-6)


def _small_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=1, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2, padding=1),
    )
    # Non-trivial BatchNorm statistics so that eval vs train mode would differ.
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    return net


def test_support_lies_inside_theoretical_receptive_field() -> None:
    net = _small_net()
    size = 24
    maps = erf_map(net, torch.rand(3, 3, size, size), average=False)
    # RF arithmetic over (kernel, stride, padding): size R, jump J, offset of output index 0.
    layers = [(3, 1, 1), (3, 2, 1), (3, 2, 1)]
    rf, jump, start = 1, 1, 0
    for k, s, pad in layers:
        rf += (k - 1) * jump
        start -= pad * jump
        jump *= s
    assert (rf, jump, start) == (9, 4, -4)
    h = size // 4
    for p, (i, j) in enumerate(position_indices(DEFAULT_POSITIONS, h, h)):
        inside = np.zeros((size, size), dtype=bool)
        r0, c0 = max(start + jump * i, 0), max(start + jump * j, 0)
        inside[r0 : start + jump * i + rf, c0 : start + jump * j + rf] = True
        for b in range(3):
            assert maps[b, p][~inside].max() == 0.0
            assert maps[b, p][inside].max() > 0.0


def test_batched_equals_position_by_position_and_average() -> None:
    net = _small_net()
    images = torch.rand(3, 3, 16, 16)
    positions = [(0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5), (1.0, 1.0)]
    looped = erf_map(net, images, positions, average=False, method="per-position", chunk_size=1)
    for chunk in (2, 4, 5, 100):  # fewer copies than positions, one image per pass, several images per pass
        batched = erf_map(net, images, positions, average=False, method="batched", chunk_size=chunk)
        np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-7)
    averaged = erf_map(net, images, positions, average=True, chunk_size=7)
    np.testing.assert_allclose(averaged, looped.mean(axis=0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["batched", "per-position"])
def test_both_paths_match_the_closed_form_of_a_padded_strided_linear_stack(method: str) -> None:
    """Padded, strided linear convs: the ERF at (i, j) is the transposed convolution of a one-hot map
    at (i, j) through the stack, in closed form: a sum of placed copies of the kernels."""
    c1 = _fixed_conv(3, 4, 3, seed=4, stride=2, padding=1)
    c2 = _fixed_conv(4, 2, 3, seed=5, stride=1, padding=1)
    net = nn.Sequential(c1, c2)
    size = 12  # -> 6x6 map
    w1 = c1.weight.detach().double().numpy()  # (m, c, 3, 3)
    w2 = c2.weight.detach().double().numpy()  # (o, m, 3, 3)
    positions = [(0.0, 0.0), (0.5, 0.5), (1.0, 0.2)]
    maps = erf_map(net, torch.rand(2, 3, size, size), positions, average=False, method=method, chunk_size=2)
    for p, (i, j) in enumerate(position_indices(positions, 6, 6)):
        # d sum_o z2[o,i,j] / d z1[m, i+a-1, j+b-1] = sum_o w2[o, m, a, b]
        g1 = np.zeros((4, 6, 6))
        for a in range(3):
            for b in range(3):
                r, c = i + a - 1, j + b - 1
                if 0 <= r < 6 and 0 <= c < 6:
                    g1[:, r, c] += w2[:, :, a, b].sum(axis=0)
        # d z1[m, r, c] / d x[ch, 2r+a-1, 2c+b-1] = w1[m, ch, a, b]
        gx = np.zeros((3, size, size))
        for r in range(6):
            for c in range(6):
                for a in range(3):
                    for b in range(3):
                        u, v = 2 * r + a - 1, 2 * c + b - 1
                        if 0 <= u < size and 0 <= v < size:
                            gx[:, u, v] += np.einsum("m,mc->c", g1[:, r, c], w1[:, :, a, b])
        expected = np.abs(gx).sum(axis=0)
        for b_img in range(2):
            np.testing.assert_allclose(maps[b_img, p], expected, rtol=1e-5, atol=1e-6)


class _NumpyBackward(torch.autograd.Function):
    """Identity whose backward goes through numpy: fine for a plain backward pass, impossible under vmap."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.from_numpy(grad.detach().cpu().numpy().copy())


class _NotVectorisable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _small_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_NumpyBackward.apply(x))


def test_falls_back_to_per_position_when_the_backward_cannot_be_vectorised(monkeypatch: pytest.MonkeyPatch) -> None:
    from cossl_analysis.analyses import erf
    from cossl_analysis.analyses.erf import NotVectorisable

    model = _NotVectorisable()
    images = torch.rand(2, 3, 16, 16)
    monkeypatch.setattr(erf, "_auto_backward", lambda device: "measure")  # auto off a CPU tries vectorising
    with pytest.warns(RuntimeWarning, match="position by position"):
        auto = erf_map(model, images, average=False)
    reference = erf_map(model.net, images, average=False, method="per-position")
    np.testing.assert_allclose(auto, reference, rtol=1e-5, atol=1e-7)
    with pytest.raises(NotVectorisable):
        erf_map(model, images, method="batched")


def test_restores_train_mode() -> None:
    net = _small_net().train()
    for method in ("batched", "per-position"):
        erf_map(net, torch.rand(2, 3, 16, 16), average=False, method=method, chunk_size=3)
        assert net.training and net[1].training  # erf_map evaluates in eval mode, then restores
    with pytest.raises(ValueError, match="unknown method"):
        erf_map(net, torch.rand(1, 3, 16, 16), method="fast")  # type: ignore[arg-type]


def test_rejects_non_feature_map_models() -> None:
    with pytest.raises(ValueError, match="feature map"):
        erf_map(nn.Sequential(nn.Flatten()), torch.rand(1, 3, 4, 4))


def test_save_erf_writes_png_and_raw_numbers(tmp_path) -> None:
    net = _small_net()
    images = torch.rand(2, 3, 16, 16)
    maps = erf_map(net, images, average=False)
    shown = save_erf(images, maps, tmp_path / "erf.png", positions=DEFAULT_POSITIONS)
    assert shown.shape == maps.shape
    np.testing.assert_allclose(shown.reshape(2, 4, -1).max(axis=2), 1.0)
    assert (tmp_path / "erf.png").stat().st_size > 0
    raw = np.load(tmp_path / "erf.npz")
    np.testing.assert_array_equal(raw["maps"], maps)
    meta = json.loads((tmp_path / "erf.json").read_text())
    assert meta["shape"] == [2, 4, 16, 16] and len(meta["positions"]) == 4
    # Averaged (P, H, W) maps are drawn over every image.
    assert save_erf(images, maps.mean(axis=0), tmp_path / "avg.png").shape == (2, 4, 16, 16)


def test_rf_centres_follow_the_rf_calculator() -> None:
    from cossl_train.backbones import backbone_info

    cfg = load_config(None, ["backbone.name=resnet18", "backbone.small_image=true", "backbone.width=8"])
    info = backbone_info("resnet18", small_image=True, width=8, input_size=20)
    assert info["feature_size"] == 3
    centres = rf_centres(cfg, [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (1.0, 1.0)], 20)
    step, first = info["jump"], info["start"] + (info["rf"] - 1) / 2
    expected = [first, first + step, first + 2 * step]
    assert centres[0] == (max(expected[0], 0.0), max(expected[0], 0.0))
    assert centres[1][1] == pytest.approx(expected[1])
    assert centres[2] == pytest.approx((expected[1], expected[1]))
    assert all(0 <= v <= 19 for c in centres for v in c)  # clipped to the image


def test_erf_stats() -> None:
    delta = np.zeros((9, 9))
    delta[2, 5] = 3.0
    s = erf_stats(delta)
    assert s["centroid"] == [2.0, 5.0] and s["rms_radius"] == 0.0 and s["peak"] == 3.0
    assert s["area90"] == pytest.approx(1 / 81)
    uniform = erf_stats(np.ones((10, 10)))
    assert uniform["centroid"] == [4.5, 4.5]
    assert uniform["area90"] == pytest.approx(0.9)
    assert erf_stats(np.zeros((4, 4)))["rms_radius"] is None


def test_uint8_images_are_pixels_over_255() -> None:
    """uint8 images mean what they mean everywhere in the package (value / 255): on a network with
    ReLUs and normalisation the gradient depends on the input's scale, so 0-255 floats, which would
    differ, are refused by an encoder of the package."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2))
    backbone.num_features = 4  # type: ignore[assignment]
    net = Encoder(backbone, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    images = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    as_uint8 = erf_map(net, images, average=False)
    np.testing.assert_allclose(as_uint8, erf_map(net, images.float() / 255, average=False), rtol=1e-6, atol=0)
    with pytest.raises(AnalysisError, match="floats up to 255"):
        erf_map(net, images.float(), average=False)


def test_a_bare_position_pair_is_a_one_line_error() -> None:
    net = nn.Conv2d(3, 2, 3)
    with pytest.raises(ValueError, match=r"got the bare pair \(0.5, 0.5\); for one position pass \[\(0.5, 0.5\)\]"):
        erf_map(net, torch.rand(1, 3, 8, 8), (0.5, 0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a position is a"):
        position_indices([(0.5,)], 3, 3)  # type: ignore[list-item]


def test_a_bare_position_on_the_command_line_says_how_to_write_it() -> None:
    from cossl_analysis.config import load_analysis_config
    from cossl_analysis.errors import AnalysisError

    with pytest.raises(AnalysisError, match=r"erf.positions=\[\[0.5,0.5\]\] for one position"):
        load_analysis_config(["erf.positions=[0.5,0.5]"])


def test_looped_and_auto_equal_position_by_position() -> None:
    """One forward pass per chunk, then one backward pass per position (or vectorised, as ``auto``
    measures): the same maps as captum's forward and backward per position."""
    net = _small_net()
    images = torch.rand(3, 3, 16, 16)
    positions = [(0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5), (1.0, 1.0)]
    reference = erf_map(net, images, positions, average=False, method="per-position", chunk_size=1)
    for chunk in (1, 2, 5, 100):
        for method in ("looped", "auto"):
            maps = erf_map(net, images, positions, average=False, method=method, chunk_size=chunk)
            np.testing.assert_allclose(maps, reference, rtol=1e-5, atol=1e-7, err_msg=f"{method} {chunk}")
    one = erf_map(net, images, [(0.5, 0.5)], average=False, method="auto")
    np.testing.assert_allclose(one, reference[:, 3:4], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("vector_s", "expected"), [(0.5, "vectorised"), (2.0, "looped")])
def test_auto_keeps_the_backward_that_was_faster_per_position(monkeypatch: pytest.MonkeyPatch, vector_s: float,
                                                              expected: str) -> None:
    """The rule off a CPU: position 0 looped and the next group vectorised, each timed; the faster
    per position computes the rest of the chunk and the later chunks."""
    from cossl_analysis.analyses import erf

    calls: list[str] = []

    def timed(fn, *args):  # noqa: ANN001, ANN002, ANN202
        calls.append(fn.__name__)
        return fn(*args), (1.0 if fn is erf._looped else vector_s * len(args[2]))

    monkeypatch.setattr(erf, "_timed", timed)
    net = _small_net()
    images = torch.rand(2, 3, 16, 16)
    positions = [(0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5), (1.0, 1.0)]
    inp = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        _, _, h, w = net(inp).shape
    flat = torch.tensor([i * w + j for i, j in erf.position_indices(positions, h, w)])
    with erf.eval_mode(net):
        maps, chosen = erf._batched_chunk(net, images[:1], flat, 2, "measure")
    assert calls == ["_looped", "_vectorised"] and chosen == expected
    reference = erf_map(net, images[:1], positions, average=False, method="per-position")
    np.testing.assert_allclose(maps.double().numpy(), reference, rtol=1e-5, atol=1e-7)


def test_auto_loops_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU ``auto`` runs one plain backward pass per position and no vectorised one."""
    from cossl_analysis.analyses import erf

    used: list[str] = []
    for name in ("_looped", "_vectorised"):
        real = getattr(erf, name)
        monkeypatch.setattr(erf, name, lambda *a, _r=real, _n=name: (used.append(_n), _r(*a))[1])
    net = _small_net()
    images = torch.rand(3, 3, 16, 16)
    maps = erf_map(net, images, [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)], average=False)
    assert set(used) == {"_looped"}
    reference = erf_map(net, images, [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)], average=False, method="per-position")
    np.testing.assert_allclose(maps, reference, rtol=1e-5, atol=1e-7)
