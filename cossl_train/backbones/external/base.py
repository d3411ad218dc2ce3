"""What every family rule shares: the :class:`Rule` interface, the :class:`Pooling` it returns,
hooks that stop a forward pass at a layer, and tokens laid out on their patch grid.

A rule is a stateless description of one model family (it holds settings, never a module): given
the network it says how to run it up to the map, how to turn the raw output into a (B, C, h, w) map
(with the prefix tokens of a transformer, if any), and what the model's own global representation
is (:class:`Pooling`). :class:`~cossl_train.backbones.external.FeatureMap` executes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ...errors import BackboneError

#: how the global representation depends on the map: ``mean`` = head(spatial mean) (any subset of
#: positions re-pools), ``map`` = some other function of the whole map (max pooling), ``pass`` = it
#: needs more than the map (a class token of the same forward pass)
PoolingKind = Literal["mean", "map", "pass"]


class _Reached(BaseException):
    """Carries a hooked layer's output out of the forward pass, which then stops.

    A BaseException so that a model's own ``except Exception`` cannot swallow it.
    """

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output


def run_to(net: nn.Module, z: Tensor, name: str, before: bool = False) -> Any:
    """The output (``before``: the first input) of submodule ``name`` in ``net``'s own forward pass
    on ``z``; the pass stops there. Gradients flow through it; the hook lives for this call only."""
    module = net.get_submodule(name)

    def stop_at_input(_module: nn.Module, inputs: Any) -> None:
        raise _Reached(inputs[0] if isinstance(inputs, tuple) and inputs else inputs)

    def stop_at_output(_module: nn.Module, _inputs: Any, output: Any) -> None:
        raise _Reached(output)

    handle = module.register_forward_pre_hook(stop_at_input) if before else module.register_forward_hook(stop_at_output)
    try:
        net(z)
    except _Reached as reached:
        return reached.output
    finally:
        handle.remove()
    raise BackboneError(f"layer {name!r} of {type(net).__name__} is not run by its forward pass")


class Shared(nn.Module):
    """A step of a module registered elsewhere (the network), applied to (B, C) vectors.

    The module is kept outside ``_modules`` so that its tensors appear once in a state_dict; deep
    copies still follow the copied network (same object, one memo entry). ``how``:

    * ``"call"``: ``module(v)``;
    * ``"norm2d"``: a channel norm of (B, C, 1, 1) maps (torchvision's ``LayerNorm2d``);
    * ``"pre_logits"`` / ``"pre_logits_nhwc"``: timm's ``forward_head(pre_logits=True)`` on the
      1x1 map (channels first / last) whose average is ``v``;
    * ``"pre_logits_tokens"``: the same on one patch token ``v`` after ``prefix`` zero prefix tokens.
    """

    def __init__(self, module: nn.Module | list[nn.Module], how: str = "call", prefix: int = 0,
                 text: str = "") -> None:
        super().__init__()
        self.__dict__["_module"] = module
        self.how, self.prefix, self.text = how, prefix, text

    def forward(self, v: Tensor) -> Tensor:
        m = self._module
        if self.how == "call":
            for step in (m if isinstance(m, list) else [m]):
                v = step(v)
            return v
        if self.how == "norm2d":
            return m(v[:, :, None, None]).flatten(1)
        if self.how == "pre_logits":
            return m.forward_head(v[:, :, None, None], pre_logits=True)
        if self.how == "pre_logits_nhwc":
            return m.forward_head(v[:, None, None, :], pre_logits=True)
        if self.how == "pre_logits_tokens":
            pad = v.new_zeros(v.shape[0], self.prefix, v.shape[1])
            return m.forward_head(torch.cat([pad, v[:, None, :]], dim=1), pre_logits=True)
        raise ValueError(f"unknown head step {self.how!r}")

    def extra_repr(self) -> str:
        return self.text


@dataclass
class Pooling:
    """The global representation of a family, in terms of its map.

    Attributes:
        kind: see :data:`PoolingKind`.
        text: what it is, in words (``"class token"``, ``"spatial mean of the map, then LayerNorm"``).
        name: short name for settings and reports (``mean``, ``token``, ``max``, ``avgmax``, ...).
        head: kind ``mean``: the step after the spatial mean (None = the identity).
        of_map: kind ``map``: (net, fmap) -> (B, D).
        of_pass: kind ``pass``: (net, fmap, prefix tokens (B, P, C)) -> (B, D).
    """

    kind: PoolingKind
    text: str
    name: str = "mean"
    head: nn.Module | None = None
    of_map: Callable[[nn.Module, Tensor], Tensor] | None = None
    of_pass: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None


def mean_pooling(head: nn.Module | None = None, what: str = "spatial mean of the map") -> Pooling:
    extra = getattr(head, "text", "") if head is not None else ""
    return Pooling("mean", f"{what}, then {extra}" if extra else what, "mean", head)


class Rule:
    """One model family (module docstring). Subclasses override what differs from a module whose
    output is its map, pooled by the spatial mean."""

    #: family name, for messages
    name = "module"
    #: its 4-D outputs (the map and inner layers) are channels-last (Swin)
    nhwc = False
    #: its layers may output (B, N, C) tokens laid out on the patch grid
    tokens = False

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return True

    def map_text(self, net: nn.Module) -> str:
        return "the module's output"

    def run(self, net: nn.Module, z: Tensor) -> Any:
        """The raw output holding the default map (a map, tokens, or channels-last)."""
        return net(z)

    def finish(self, net: nn.Module, fmap: Tensor) -> Tensor:
        """What the model does to its map before pooling that no hook can catch (DenseNet's ReLU)."""
        return fmap

    def pooling(self, net: nn.Module, channels: int, prefix: int) -> Pooling:
        """The model's own global representation; ``prefix``: prefix tokens seen at the probe."""
        return mean_pooling()

    def mean_head(self, net: nn.Module) -> nn.Module | None:
        """The step after the spatial mean when the global is asked to be the mean although the
        model's own pooling is another (a ViT's ``fc_norm``); None = the identity."""
        return None

    def token_pooling(self, net: nn.Module) -> Pooling | None:
        """The class token alone as the global (token families), else None."""
        return None

    def class_token_global(self, net: nn.Module) -> bool:
        """Whether the model's own global is its class token (then an inner layer's is too)."""
        return False

    def barrier(self, net: nn.Module) -> tuple[str, ...]:
        """Top-level children at or after the global pooling (not valid layers for a map)."""
        return ()

    def grid(self, net: nn.Module, z: Tensor) -> tuple[int, int]:
        """(h, w) patch grid of a transformer's tokens for input ``z`` ((0, 0): unknown)."""
        return 0, 0

    def prefix_tokens(self, net: nn.Module) -> int:
        return 0

    def default_input_size(self, net: nn.Module) -> int:
        return default_input_size(net)


def default_input_size(net: nn.Module) -> int:
    """The side the model was built for: a ViT's image size, timm's ``pretrained_cfg`` input size,
    else 224."""
    image_size = getattr(net, "image_size", None)  # torchvision VisionTransformer
    if isinstance(image_size, int):
        return image_size
    patch_embed = getattr(net, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is not None:
        return int(img_size if isinstance(img_size, int) else img_size[-1])
    cfg = getattr(net, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    return int(size[-1]) if size else 224


def shape_text(out: Any) -> str:
    if isinstance(out, Tensor):
        return "(" + ", ".join(map(str, out.shape)) + ")"
    return f"a {type(out).__name__}"


def tokens_to_map(tokens: Tensor, grid: tuple[int, int], prefix: int, where: str,
                  exact: bool = False) -> tuple[Tensor, Tensor | None]:
    """(B, N, C) tokens -> ((B, C, h, w) map of the patch tokens, (B, P, C) prefix tokens or None).

    ``grid`` is the patch grid (h, w) of the input ((0, 0) when unknown: then the patch tokens must
    fill a square grid); ``prefix`` the class/distillation/register tokens in front of them, which an
    inner layer's output may lack unless ``exact`` (the model's own final tokens).
    """
    b, n, c = tokens.shape
    h, w = grid
    if exact and h * w and n != h * w + prefix:
        raise BackboneError(f"{where} gives {n} tokens ({prefix} prefix), which do not fill the {h}x{w} patch grid; "
                            "give it square images of a side its patch size divides")
    if h * w == 0 or n not in (h * w, h * w + prefix):
        side = int(round((n - prefix) ** 0.5)) if n > prefix else 0
        if side > 0 and side * side == n - prefix:
            h = w = side
        elif int(round(n ** 0.5)) ** 2 == n:
            h = w = int(round(n ** 0.5))
            prefix = 0
        else:
            grid_text = f"the {grid[0]}x{grid[1]} patch grid" if grid[0] * grid[1] else "a square patch grid"
            raise BackboneError(f"{where} gives {n} tokens ({prefix} prefix), which do not fill {grid_text}; "
                                "give it square images of a side its patch size divides")
    if n == h * w:
        prefix = 0
    fmap = tokens[:, prefix:].transpose(1, 2).reshape(b, c, h, w)
    return fmap, (tokens[:, :prefix] if prefix else None)


def patch_grid(net: nn.Module, z: Tensor) -> tuple[int, int]:
    """(h, w) patch grid of a ViT-like network for input ``z`` (timm's ``dynamic_feat_size``, else
    the side divided by the patch size); (0, 0) when the network does not say."""
    height, width = z.shape[-2:]
    patch_embed = getattr(net, "patch_embed", None)
    if patch_embed is not None and hasattr(patch_embed, "dynamic_feat_size"):
        h, w = patch_embed.dynamic_feat_size((height, width))
        return int(h), int(w)
    patch = getattr(net, "patch_size", None)
    if patch is None and patch_embed is not None:
        patch = getattr(patch_embed, "patch_size", None)
    if patch is None:
        return 0, 0
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return height // ph, width // pw


def same_tensor(a: Tensor, b: Tensor) -> bool:
    """``b`` is ``a`` or a view of the same memory with the same shape (``detach()``, ``.float()``)."""
    if a is b:
        return True
    return a.shape == b.shape and a.device == b.device and a.data_ptr() == b.data_ptr() and a.stride() == b.stride()
