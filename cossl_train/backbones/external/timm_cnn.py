"""timm CNNs (and every timm model whose ``forward_features`` returns a map): the map is
``forward_features``; the global is the model's own ``forward_head(pre_logits=True)`` on it.

When that head pools by average (checked numerically on a random map), the global is
head(spatial mean) and any subset of positions re-pools; otherwise (max pooling, say) the head is
run on the whole map and the pooling is named.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from .base import Pooling, Rule, Shared, mean_pooling

log = logging.getLogger("cossl_train")


def is_timm(net: nn.Module) -> bool:
    return type(net).__module__.startswith("timm.") and hasattr(net, "forward_features")


def pool_name(net: nn.Module) -> str:
    """The name of a timm model's global pooling (``avg``, ``max``, ``avgmax``, ...)."""
    for owner in (net, getattr(net, "head", None)):
        pool = getattr(owner, "global_pool", None)
        if isinstance(pool, str):
            return pool or "none"
        kind = getattr(pool, "pool_type", None)
        if isinstance(kind, str):
            return kind or "none"
    return "its own"


def head_on_map(net: nn.Module, fmap: Tensor) -> Tensor:
    return net.forward_head(fmap, pre_logits=True)


def head_on_nhwc_map(net: nn.Module, fmap: Tensor) -> Tensor:
    return net.forward_head(fmap.permute(0, 2, 3, 1), pre_logits=True)


class TimmCNN(Rule):
    name = "timm CNN"

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return is_timm(net)

    def map_text(self, net: nn.Module) -> str:
        return "output of forward_features (the last map before global pooling)"

    def run(self, net: nn.Module, z: Tensor) -> Tensor:
        return net.forward_features(z)

    def pooling(self, net: nn.Module, channels: int, prefix: int) -> Pooling:
        param = next(iter(net.parameters()), None)
        gen = torch.Generator().manual_seed(0)
        fmap = torch.randn(2, channels, 3, 3, generator=gen)
        if param is not None:
            fmap = fmap.to(device=param.device, dtype=param.dtype)
        of_map = head_on_nhwc_map if self.nhwc else head_on_map
        head = Shared(net, "pre_logits_nhwc" if self.nhwc else "pre_logits", text="the model's pre-logits head")
        from ...evaluate import eval_mode

        with eval_mode(net), torch.no_grad():
            try:
                own = of_map(net, fmap)
            except Exception as err:  # noqa: BLE001 - a head that does not run on a map: pool by the mean
                log.warning("%s: forward_head does not run on its map (%s); the global representation used is "
                            "the spatial mean", type(net).__name__, str(err).splitlines()[0] if str(err) else err)
                return mean_pooling(what="spatial mean of the map (the model's head does not run on a map)")
            mean = fmap.mean(dim=(2, 3))
            if own.shape == mean.shape and torch.allclose(own, mean, rtol=1e-5, atol=1e-6):
                return mean_pooling()
            via_mean = head(mean)
            if own.shape == via_mean.shape and torch.allclose(own, via_mean, rtol=1e-4, atol=1e-5):
                return mean_pooling(head)
        name = pool_name(net)
        return Pooling("map", f"the model's own head on the map (global pooling {name!r})", name, of_map=of_map)
