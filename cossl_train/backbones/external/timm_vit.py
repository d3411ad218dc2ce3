"""timm vision transformers (ViT, DeiT, distilled DeiT, register tokens): the map is the patch
tokens of ``forward_features`` (after the final norm) laid out on the patch grid; class,
distillation and register tokens are not positions and are left out of it.

The global is the model's own ``forward_head(pre_logits=True)`` on the same tokens, whatever its
pooling: the class token (``global_pool="token"``), the mean of the class and distillation tokens
(distilled DeiT), the mean / max / mean-and-max of the patch tokens (``avg``, ``max``, ``avgmax``)
or attention pooling (``map``), then ``fc_norm``. Whether it needs the prefix tokens (then it is a
property of the forward pass, not of the map) and whether it is head(mean) is checked numerically
on random tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...errors import BackboneError
from .base import Pooling, Rule, Shared, mean_pooling, patch_grid
from .timm_cnn import is_timm

_POOL_TEXT = {
    "token": "class token",
    "avg": "mean of the patch tokens",
    "max": "max over the patch tokens",
    "avgmax": "mean of the average and the max over the patch tokens",
}


def _tokens(fmap: Tensor) -> Tensor:
    return fmap.flatten(2).transpose(1, 2)


def _prefix_count(net: nn.Module) -> int:
    return int(getattr(net, "num_prefix_tokens", 1 if getattr(net, "cls_token", None) is not None else 0))


def head_of_pass(net: nn.Module, fmap: Tensor, prefix: Tensor) -> Tensor:
    """The model's pre-logits global from its prefix tokens and the map of the same pass."""
    return net.forward_head(torch.cat([prefix, _tokens(fmap)], dim=1), pre_logits=True)


def head_of_map(net: nn.Module, fmap: Tensor) -> Tensor:
    """The same for a pooling that ignores the prefix tokens (zeros stand in for them)."""
    tokens = _tokens(fmap)
    pad = tokens.new_zeros(tokens.shape[0], _prefix_count(net), tokens.shape[2])
    return net.forward_head(torch.cat([pad, tokens], dim=1), pre_logits=True)


def class_token(net: nn.Module, fmap: Tensor, prefix: Tensor) -> Tensor:
    norm = getattr(net, "fc_norm", None)
    return norm(prefix[:, 0]) if isinstance(norm, nn.Module) else prefix[:, 0]


def _is_distilled(net: nn.Module) -> bool:
    return getattr(net, "dist_token", None) is not None


def _fc_norm(net: nn.Module) -> nn.Module | None:
    norm = getattr(net, "fc_norm", None)
    return norm if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity) else None


def _pool_text(net: nn.Module) -> str:
    if _is_distilled(net):
        return "mean of the class and distillation tokens"
    if getattr(net, "attn_pool", None) is not None:
        return "attention pooling (MAP) of the tokens"
    name = str(getattr(net, "global_pool", ""))
    text = _POOL_TEXT.get(name, f"its own pooling {name!r}")
    if name != "token" and getattr(net, "pool_include_prefix", False):
        text = text.replace("the patch tokens", "all tokens")
    return text + (", then fc_norm" if _fc_norm(net) is not None else "")


def _pool_name(net: nn.Module) -> str:
    if _is_distilled(net):
        return "token+distillation"
    if getattr(net, "attn_pool", None) is not None:
        return "map"
    return str(getattr(net, "global_pool", "")) or "none"


class TimmViT(Rule):
    name = "timm ViT"
    tokens = True

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return is_timm(net) and hasattr(net, "patch_embed") and (
            hasattr(net, "num_prefix_tokens") or hasattr(net, "cls_token"))

    def map_text(self, net: nn.Module) -> str:
        return "patch tokens of forward_features"

    def run(self, net: nn.Module, z: Tensor) -> Tensor:
        return net.forward_features(z)

    def grid(self, net: nn.Module, z: Tensor) -> tuple[int, int]:
        return patch_grid(net, z)

    def prefix_tokens(self, net: nn.Module) -> int:
        return _prefix_count(net)

    def pooling(self, net: nn.Module, channels: int, prefix: int) -> Pooling:
        if _pool_name(net) == "none":
            raise BackboneError(f"{type(net).__name__} was built with global_pool='' : it has no global "
                                "representation (build it with its own pooling, e.g. global_pool='token')")
        param = next(iter(net.parameters()))
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randn(2, prefix + 4, channels, generator=gen).to(device=param.device, dtype=param.dtype)
        from ...evaluate import eval_mode

        with eval_mode(net), torch.no_grad():
            own = net.forward_head(tokens, pre_logits=True)
            other = tokens.clone()
            other[:, :prefix] = torch.randn(2, prefix, channels, generator=gen).to(other)
            if prefix and not torch.allclose(own, net.forward_head(other, pre_logits=True), rtol=1e-5, atol=1e-6):
                return Pooling("pass", _pool_text(net), _pool_name(net), of_pass=head_of_pass)
            head = Shared(net, "pre_logits_tokens", prefix=prefix, text="fc_norm" if _fc_norm(net) else "")
            mean = tokens[:, prefix:].mean(dim=1)
            if torch.allclose(own, head(mean), rtol=1e-4, atol=1e-5):
                return mean_pooling(head if _fc_norm(net) is not None else None, "mean of the patch tokens")
        return Pooling("map", _pool_text(net), _pool_name(net), of_map=head_of_map)

    def token_pooling(self, net: nn.Module) -> Pooling | None:
        if getattr(net, "cls_token", None) is None:
            return None
        return Pooling("pass", "class token" + (", then fc_norm" if _fc_norm(net) else ""), "token",
                       of_pass=class_token)

    def mean_head(self, net: nn.Module) -> nn.Module | None:
        norm = _fc_norm(net)
        return Shared(norm, "call", text="fc_norm") if norm is not None else None

    def class_token_global(self, net: nn.Module) -> bool:
        return _pool_name(net) == "token" and getattr(net, "cls_token", None) is not None
