"""torchvision CNNs (and any module built like them): the map is what the model's own forward pass
pools globally; the global is that pooling (a spatial mean), then whatever the classifier does
before its final linear layer (MobileNetV3's hidden layer; dropout is skipped).

* models with an ``avgpool`` child (ResNet, ResNeXt, Wide-ResNet, RegNet, GoogLeNet, Inception v3,
  EfficientNet, MobileNetV3, and any module with such a child): the input of ``avgpool``, taken by
  a pre-hook that stops the pass there, so whatever the forward does between its children
  (Inception's input transform) is kept;
* models that average a child's output in their forward (MobileNetV2: ``features``, MNASNet:
  ``layers``, ShuffleNetV2: ``conv5``): that child's output;
* models without a global pooling before their classifier (VGG, AlexNet, SqueezeNet, MaxViT) are
  refused: they have no global representation to read (a layer may still be named).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ...errors import BackboneError
from ..library import final_linear
from .base import Pooling, Rule, Shared, mean_pooling, run_to

#: torchvision classes whose forward averages this child's output (no avgpool child)
MEAN_OF_CHILD = {"MobileNetV2": "features", "MNASNet": "layers", "ShuffleNetV2": "conv5"}

#: torchvision classes with no global pooling right before their classifier, and why
NO_GLOBAL_POOL = {
    "VGG": "classifies its flattened 7x7 map with an MLP",
    "AlexNet": "classifies its flattened 6x6 map with an MLP",
    "SqueezeNet": "classifies every position with a 1x1 convolution before it pools",
    "MaxVit": "runs a norm and an MLP after its pooling inside the classifier",
}

_SKIPPED = (nn.Dropout, nn.Flatten, nn.Identity)


def is_torchvision(net: nn.Module) -> bool:
    return type(net).__module__.startswith("torchvision.models")


def children(net: nn.Module) -> list[str]:
    return [n for n, _ in net.named_children()]


def classifier_hidden(net: nn.Module, after: str) -> list[nn.Module]:
    """The layers the model applies to its pooled vector before its final linear layer, from the
    children after ``after`` (dropout and flatten skipped: the identity in evaluation)."""
    names = children(net)
    last = final_linear(net)
    steps: list[nn.Module] = []
    for name in names[names.index(after) + 1:]:
        child = net.get_submodule(name)
        members = list(child.named_children()) if isinstance(child, nn.Sequential) else [("", child)]
        for sub, m in members:
            dotted = f"{name}.{sub}" if sub else name
            if dotted == last or isinstance(m, _SKIPPED) or isinstance(m, nn.AdaptiveAvgPool2d):
                continue
            steps.append(m)
    return steps


def hidden_pooling(net: nn.Module, after: str) -> Pooling:
    steps = classifier_hidden(net, after)
    if not steps:
        return mean_pooling()
    text = "the classifier's " + ", ".join(type(s).__name__ for s in steps)
    return mean_pooling(Shared(steps, "call", text=text))


class TorchvisionPooled(Rule):
    """A module with an ``avgpool`` child (module docstring)."""

    name = "CNN with an avgpool child"

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return "avgpool" in children(net)

    def _last_before(self, net: nn.Module) -> str | None:
        names = children(net)
        before = [n for n in names[: names.index("avgpool")] if n not in ("AuxLogits", "aux1", "aux2")]
        return before[-1] if before else None

    def map_text(self, net: nn.Module) -> str:
        return f"input of 'avgpool' (the last map before global pooling, after '{self._last_before(net)}')"

    def run(self, net: nn.Module, z: Tensor) -> Any:
        pool = net.get_submodule("avgpool")
        size = getattr(pool, "output_size", 1)
        if isinstance(pool, nn.AdaptiveAvgPool2d) and size not in (1, (1, 1), [1, 1]):
            raise BackboneError(f"{type(net).__name__} pools its map to {size}, not to one vector: it has no global "
                                "representation to read (name a layer whose output is the map)")
        return run_to(net, z, "avgpool", before=True)

    def pooling(self, net: nn.Module, channels: int, prefix: int) -> Pooling:
        return hidden_pooling(net, "avgpool")

    def barrier(self, net: nn.Module) -> tuple[str, ...]:
        names = children(net)
        return tuple(names[names.index("avgpool"):])


class TorchvisionMeanOfChild(Rule):
    """A torchvision model whose forward averages one child's output (:data:`MEAN_OF_CHILD`)."""

    name = "torchvision CNN"

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return is_torchvision(net) and type(net).__name__ in MEAN_OF_CHILD

    def child(self, net: nn.Module) -> str:
        return MEAN_OF_CHILD[type(net).__name__]

    def map_text(self, net: nn.Module) -> str:
        return f"output of '{self.child(net)}' (what the model averages)"

    def run(self, net: nn.Module, z: Tensor) -> Any:
        return run_to(net, z, self.child(net))

    def pooling(self, net: nn.Module, channels: int, prefix: int) -> Pooling:
        return hidden_pooling(net, self.child(net))

    def barrier(self, net: nn.Module) -> tuple[str, ...]:
        names = children(net)
        return tuple(names[names.index(self.child(net)) + 1:])


class TorchvisionNoGlobalPool(Rule):
    """torchvision models with no global pooling before their classifier: refused without a layer."""

    name = "torchvision model without global pooling"

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return is_torchvision(net) and type(net).__name__ in NO_GLOBAL_POOL

    def run(self, net: nn.Module, z: Tensor) -> Any:
        raise BackboneError(f"{type(net).__name__} {NO_GLOBAL_POOL[type(net).__name__]}: it has no global "
                            "representation to read (name a layer whose output is the map)")
