"""torchvision VisionTransformer: the map is the patch tokens of the encoder's output (after its
final norm) on the patch grid; the global is the class token of the same pass, then the
pre-logits layer of ``heads`` when the model has one (``representation_size``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Pooling, Rule, Shared
from .torchvision_cnn import is_torchvision


def _hidden(net: nn.Module) -> list[nn.Module]:
    """``heads`` without its final linear layer (the pre-logits Linear and Tanh, if any)."""
    heads = list(net.heads)
    return heads[:-1]


def _class_token_global(net: nn.Module, fmap: Tensor, prefix: Tensor) -> Tensor:
    x = prefix[:, 0]
    for step in _hidden(net):
        x = step(x)
    return x


class TorchvisionViT(Rule):
    name = "torchvision ViT"
    tokens = True

    @classmethod
    def matches(cls, net: nn.Module) -> bool:
        return is_torchvision(net) and type(net).__name__ == "VisionTransformer"

    def map_text(self, net: nn.Module) -> str:
        return "patch tokens of the encoder"

    def run(self, net: nn.Module, z: Tensor) -> Tensor:
        # VisionTransformer.forward up to (and without) taking the class token
        x = net._process_input(z)
        x = torch.cat([net.class_token.expand(len(x), -1, -1), x], dim=1)
        return net.encoder(x)

    def grid(self, net: nn.Module, z: Tensor) -> tuple[int, int]:
        return z.shape[-2] // net.patch_size, z.shape[-1] // net.patch_size

    def prefix_tokens(self, net: nn.Module) -> int:
        return 1

    def pooling(self, net: nn.Module, channels: int, prefix: int) -> Pooling:
        return self.token_pooling(net)

    def token_pooling(self, net: nn.Module) -> Pooling:
        hidden = _hidden(net)
        text = "class token" + (", then the pre-logits layer of heads" if hidden else "")
        return Pooling("pass", text, "token", of_pass=_class_token_global)

    def mean_head(self, net: nn.Module) -> nn.Module | None:
        hidden = _hidden(net)
        return Shared(hidden, "call", text="the pre-logits layer of heads") if hidden else None

    def class_token_global(self, net: nn.Module) -> bool:
        return True

    def barrier(self, net: nn.Module) -> tuple[str, ...]:
        return ("heads",)
