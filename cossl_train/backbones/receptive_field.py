"""Receptive-field arithmetic of a chain-like backbone (size, jump, start; Araujo et al. 2019) and a
gradient probe that measures the same on a real forward/backward pass (docs/training.md)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ReceptiveField", "receptive_field", "output_size", "main_path_layers", "gradient_rf_probe"]

#: layer types whose geometry (kernel, stride, padding, dilation) moves the RF
_GEOMETRIC = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)

#: activations that the probe replaces by the identity (see ``_linearise``)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish)


@dataclass(frozen=True)
class ReceptiveField:
    """Geometry of one output position's RF along one image axis (the backbones are square).

    Attributes:
        size: RF side in input pixels.
        jump: total stride, in input pixels, between two neighbouring output positions.
        start: input coordinate of the first pixel in the RF of output position 0; negative when
            padding lets the RF reach outside the image.
    """

    size: int
    jump: int
    start: int

    def span(self, index: int) -> tuple[int, int]:
        """Inclusive input-pixel interval ``(first, last)`` seen by output position ``index``."""
        first = self.start + index * self.jump
        return first, first + self.size - 1


def _single(value: int | tuple[int, ...], what: str, layer: nn.Module) -> int:
    """Reduce a per-axis hyper-parameter to one int; refuse non-square geometry."""
    if isinstance(value, int):
        return value
    values = tuple(value)
    if len(set(values)) != 1:
        raise ValueError(f"non-square {what}={values} in {layer!r}; only square geometry is supported")
    return int(values[0])


def _geometry(layer: nn.Module) -> tuple[int, int, int, int, bool]:
    """(kernel, stride, padding, dilation, ceil_mode) of a conv or pooling layer."""
    kernel = _single(layer.kernel_size, "kernel_size", layer)
    stride = _single(layer.stride, "stride", layer)
    dilation = _single(getattr(layer, "dilation", 1), "dilation", layer)
    padding = layer.padding
    if isinstance(padding, str):  # Conv2d accepts "valid" / "same" (the latter only with stride 1)
        padding = 0 if padding == "valid" else dilation * (kernel - 1) // 2
    padding = _single(padding, "padding", layer)
    return kernel, stride, padding, dilation, bool(getattr(layer, "ceil_mode", False))


def main_path_layers(module: nn.Module, skip: Iterable[str] = ("downsample",)) -> Iterator[nn.Module]:
    """Conv and pooling layers of ``module`` in registration order, minus those under ``skip`` names.

    Registration order is forward order for every backbone in this package (each module is created
    in the order its forward pass uses it).
    """
    skip = set(skip)
    for name, layer in module.named_modules():
        if isinstance(layer, _GEOMETRIC) and not skip.intersection(name.split(".")):
            yield layer


def receptive_field(module: nn.Module, skip: Iterable[str] = ("downsample",)) -> ReceptiveField:
    """Theoretical RF of one output position of ``module`` (a (B, 3, H, W) -> (B, C, h, w) chain).

    Works on any device, including ``meta`` (only layer attributes are read).
    """
    size, jump, start = 1, 1, 0
    for layer in main_path_layers(module, skip):
        kernel, stride, padding, dilation, _ = _geometry(layer)
        size += dilation * (kernel - 1) * jump
        start -= padding * jump
        jump *= stride
    return ReceptiveField(size=size, jump=jump, start=start)


def output_size(module: nn.Module, input_size: int, skip: Iterable[str] = ("downsample",)) -> int:
    """Side ``h`` of the feature map for an ``input_size`` x ``input_size`` input (0 if too small).

    Uses PyTorch's output-size formula layer by layer along the main path, so no forward is run.
    """
    n = input_size
    for layer in main_path_layers(module, skip):
        kernel, stride, padding, dilation, ceil_mode = _geometry(layer)
        span = n + 2 * padding - dilation * (kernel - 1) - 1
        if span < 0:
            return 0
        out = (-(-span // stride) if ceil_mode else span // stride) + 1
        # PyTorch's pooling rule: with ceil_mode the last window must start inside the input
        if ceil_mode and (out - 1) * stride >= n + padding:
            out -= 1
        n = out
    return n


def _linearise(net: nn.Module) -> None:
    """Replace activations by Identity and max-pools by average pools of the same geometry, in place.

    Why: with ReLU and max-pool the gradient only flows through the active units and the arg-max of
    each pooling window, so the set of input pixels with non-zero gradient can be smaller than the
    geometric RF (and depends on the input). The linearised copy has exactly the same geometry, and
    its input gradient is a product of (random, hence almost surely non-zero) weights over every
    path, so its support is the full geometric RF.
    """
    for name, child in list(net.named_children()):
        if isinstance(child, _ACTIVATIONS):
            setattr(net, name, nn.Identity())
        elif isinstance(child, nn.MaxPool2d):
            kernel, stride, padding, dilation, ceil_mode = _geometry(child)
            if dilation != 1:
                raise ValueError(f"cannot linearise dilated {child!r} (AvgPool2d has no dilation)")
            setattr(net, name, nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode))
        else:
            _linearise(child)


def gradient_rf_probe(
    backbone: nn.Module,
    input_size: int | tuple[int, int],
    position: tuple[int, int] | None = None,
    seed: int = 0,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Empirical RF of one output position: the bounding box of non-zero input gradient.

    Args:
        backbone: (B, 3, H, W) -> (B, C, h, w) module; left untouched (a deep copy is probed).
        input_size: H (= W) or (H, W) of the probe image.
        position: (row, col) of the output position; default the centre of the h x w map.
        seed: seed of the random channel weights.

    Returns:
        ``((first_row, last_row), (first_col, last_col))``, inclusive input-pixel coordinates,
        comparable with ``ReceptiveField.span(row)`` / ``.span(col)`` when the RF lies inside the
        image (near the border, zero padding clips the measured span).

    Only activations that are modules are linearised; functional ones (``F.relu``) are not.
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    first = next(iter(backbone.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    # float64: the linearised network's gradients are products of many weights; in float32 the
    # contribution of the RF's corner pixels could underflow to 0 and shrink the measured span
    net = copy.deepcopy(backbone).to(dtype=torch.float64).eval()  # eval: BN is a fixed affine map
    _linearise(net)
    net.requires_grad_(False)

    # the linearised net is affine, so its input gradient does not depend on the input: zeros do
    x = torch.zeros(1, 3, height, width, dtype=torch.float64, device=device, requires_grad=True)
    out = net(x)
    if out.ndim != 4:
        raise ValueError(f"backbone must return (B, C, h, w), got shape {tuple(out.shape)}")
    _, channels, h, w = out.shape
    row, col = (h // 2, w // 2) if position is None else position
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"position {(row, col)} outside the {h}x{w} output map")
    gen = torch.Generator().manual_seed(seed)
    # a random mix of channels, so that no channel's zero weights can hide part of the RF
    weights = torch.randn(channels, generator=gen, dtype=torch.float64).to(device)
    (out[0, :, row, col] * weights).sum().backward()

    support = x.grad[0].abs().sum(0) > 0  # (H, W)
    rows = support.any(dim=1).nonzero().flatten()
    cols = support.any(dim=0).nonzero().flatten()
    if rows.numel() == 0:
        raise RuntimeError("input gradient is zero everywhere; cannot measure the RF")
    return (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))
