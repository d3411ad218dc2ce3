""":class:`FeatureMap`: a network's pre-pooling feature map and its own global representation, by
the rule of its family (``rules.py``). Trainable: hooks stop the forward pass at the map without
``no_grad``, so gradients flow into the network.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...errors import BackboneError
from .base import Pooling, Rule, default_input_size, mean_pooling, run_to, same_tensor, shape_text, tokens_to_map


def _param(net: nn.Module) -> Tensor | None:
    for t in net.parameters():
        return t
    for t in net.buffers():
        return t
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_layer(net: nn.Module, rule: Rule, layer: str, source: str) -> None:
    """One-line :class:`BackboneError` unless ``layer`` is a submodule of ``net`` before its global pooling."""
    try:
        net.get_submodule(layer)
    except AttributeError:
        top = ", ".join(n for n, _ in net.named_children()) or "none"
        raise BackboneError(f"layer {layer!r} does not exist in {source} (its top-level modules: {top})") from None
    barrier = rule.barrier(net)
    if layer.split(".")[0] in barrier:
        before = [n for n, _ in net.named_children() if n not in barrier and n not in ("AuxLogits", "aux1", "aux2")]
        raise BackboneError(f"layer {layer!r} of {source} is at or after its global pooling; name a layer before "
                            f"it (e.g. {before[-1] if before else None!r})")


def _layer_pooling(name: str) -> Pooling:
    return Pooling("pass", f"class token of layer '{name}'", "token", of_pass=_first_prefix)


def _first_prefix(net: nn.Module, fmap: Tensor, prefix: Tensor) -> Tensor:
    return prefix[:, 0]


class FeatureMap(nn.Module):
    """Normalised images (B, 3, H, W) -> the network's pre-pooling feature map (B, C, h, w).

    Built by :func:`~cossl_train.backbones.external.feature_map`; see docs/training.md ("Any
    backbone") for the map and the global of every family.

    Args:
        net: the network (its classifier, if any, is left alone and not run).
        rule: its family's rule.
        layer: dotted name of a submodule whose output is the map instead (its output must be
            (B, C, h, w), channels-last for Swin, or (B, N, C) tokens of a transformer).
        global_pool: None or ``"own"`` (the model's own global), ``"mean"`` (spatial mean, then the
            step the model applies after pooling) or ``"token"`` (a transformer's class token).
        input_size: image side of the probe pass that sizes the map (default: the model's own).
        source: the network in words, for messages.

    Attributes:
        num_features: width D of the global representation; map_channels: C; map_size: (h, w)
            at ``input_size``.
        head: the step after the spatial mean (``pooling_kind == "mean"``), else the identity.
        pooling_kind: ``"mean"`` (global = head(spatial mean): any subset of positions re-pools),
            ``"map"`` (another function of the whole map, e.g. max pooling) or ``"pass"`` (it
            needs the class token of the same forward pass).
        global_pool: the global's short name (``mean``, ``token``, ``max``, ``token+distillation``...).
        map_text / global_text: both in words.

    Shapes: ``forward(z)`` (B, 3, H, W) -> (B, C, h, w); ``forward_global(z)`` -> ((B, C, h, w),
    (B, D)); ``pool(fmap)`` (B, C, h, w) -> (B, D).

    >>> import timm, torch
    >>> from cossl_train.backbones.external import feature_map
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=0)
    >>> fm = feature_map(vit)
    >>> fmap, g = fm.forward_global(torch.randn(2, 3, 32, 32))
    >>> tuple(fmap.shape), tuple(g.shape), fm.global_pool
    ((2, 192, 4, 4), (2, 192), 'token')
    """

    def __init__(self, net: nn.Module, rule: Rule, layer: str | None = None, global_pool: str | None = None,
                 input_size: int | None = None, source: str | None = None) -> None:
        super().__init__()
        self.net = net
        self.rule = rule
        self.layer = layer
        self.source = source or type(net).__name__
        self._layer_nhwc = False
        self._last: tuple[Tensor, Tensor] | None = None
        self.input_size = int(input_size or rule.default_input_size(net))
        if layer is not None:
            check_layer(net, rule, layer, self.source)
        fmap, prefix, raw = self.probe(self.input_size, decide_layout=True)
        _, channels, h, w = fmap.shape
        self.map_channels = int(channels)
        self.map_size = (int(h), int(w))
        self.token_map = isinstance(raw, Tensor) and raw.dim() == 3
        self._prefix = 0 if prefix is None else int(prefix.shape[1])
        self._raw_tokens = int(raw.shape[1]) if self.token_map else 0
        self.map_text = self._map_text(h * w)
        self._own = self._own_pooling()
        self.head: nn.Module = nn.Identity()
        self._pooling: Pooling = self._own
        self.global_pool = global_pool  # type: ignore[assignment]
        self.num_features = self._global_width()

    def __getstate__(self) -> dict[str, Any]:
        # the cached global of the latest pass may carry an autograd graph, which neither copies nor pickles
        state = self.__dict__.copy()
        state["_last"] = None
        return state

    # -- construction ----------------------------------------------------------------------------
    def _own_pooling(self) -> Pooling:
        if self.layer is None:
            return self.rule.pooling(self.net, self.map_channels, self._prefix)
        if self._prefix and self.rule.class_token_global(self.net):
            return _layer_pooling(self.layer)
        return mean_pooling(what="mean of the patch tokens" if self.token_map else "spatial mean of the map")

    def _global_width(self) -> int:
        from ...evaluate import eval_mode

        with eval_mode(self), torch.no_grad():
            _, g = self.forward_global(self._zeros(self.input_size))
        if g.dim() != 2:
            raise BackboneError(f"the global representation of {self.source} ({self.global_text}) is "
                                f"{shape_text(g)}, not (B, D)")
        return int(g.shape[1])

    def _zeros(self, size: int) -> Tensor:
        p = _param(self.net)
        return torch.zeros(1, 3, size, size, device=p.device if p is not None else None,
                           dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)

    def probe(self, size: int, decide_layout: bool = False) -> tuple[Tensor, Tensor | None, Any]:
        """(map, prefix tokens or None, raw output) of one zero image of side ``size``, in eval mode
        without gradients; one-line :class:`BackboneError` when the network does not run at that size."""
        from ...evaluate import eval_mode

        with eval_mode(self), torch.no_grad():
            z = self._zeros(size)
            try:
                raw = self._run(z)
            except BackboneError:
                raise
            except Exception as err:  # noqa: BLE001 - e.g. a ViT built for another input size
                hint = ""
                if getattr(self.net, "dynamic_img_size", False):
                    hint = "; the image side must be a multiple of its patch size"
                elif getattr(self.net, "patch_embed", None) is not None:
                    hint = "; a timm ViT takes other sizes when built with img_size=N (or dynamic_img_size=True)"
                raise BackboneError(f"{self.source} cannot run on {size} px images ({_first_line(err)}); it was "
                                    f"built for {default_input_size(self.net)} px{hint}") from None
            if decide_layout and self.layer is not None:
                self._layer_nhwc = self._is_channels_last(raw)
            fmap, prefix = self._to_map(raw, z)
        return fmap, prefix, raw

    def _is_channels_last(self, raw: Any) -> bool:
        """A layer output of a channels-last family, read at the (square) probe: (B, a, a, c) is
        channels-last, (B, c, a, a) channels-first; the family's layout when both read alike."""
        if not (self.rule.nhwc and isinstance(raw, Tensor) and raw.dim() == 4):
            return False
        _, a, b, c = raw.shape
        if a == b != c:
            return True
        return not (b == c != a)

    def _map_text(self, positions: int) -> str:
        text = self.rule.map_text(self.net) if self.layer is None else f"output of layer '{self.layer}'"
        if not self.token_map:
            return text
        if self.layer is not None:
            text = f"patch tokens of layer '{self.layer}'"
        return f"{text} ({self._dropped_tokens_text(self._raw_tokens - positions)})"

    def _dropped_tokens_text(self, extra: int) -> str:
        if extra <= 0:
            return "no class token"
        has_class = getattr(self.net, "cls_token", None) is not None or hasattr(self.net, "class_token")
        names = ["class"] if has_class else []
        if getattr(self.net, "dist_token", None) is not None:
            names.append("distillation")
        registers = int(getattr(self.net, "num_reg_tokens", 0) or 0)
        if registers:
            names.append(f"{registers} register")
        if not names or extra != len(names) - (1 if registers else 0) + registers:
            return f"{extra} prefix tokens dropped"  # a layout this text does not know: say only how many
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"{listed} token{'s' if extra > 1 else ''} dropped"

    # -- the choice of global --------------------------------------------------------------------
    @property
    def global_pool(self) -> str:
        """The global's short name; set ``None``/``"own"``, ``"mean"`` or ``"token"`` to choose."""
        return self._pooling.name

    @global_pool.setter
    def global_pool(self, value: str | None) -> None:
        if value not in (None, "own", "mean", "token"):
            raise BackboneError(f"global_pool must be 'token' or 'mean' (or None: the model's own), got {value!r}")
        pooling = self._own
        if value == "mean" and self._own.kind != "mean":
            head = None if self.layer is not None else self.rule.mean_head(self.net)
            pooling = mean_pooling(head, "mean of the patch tokens" if self.token_map else "spatial mean of the map")
        elif value == "token" and not (self._own.name == "token" and self._own.kind == "pass"):
            token = self.rule.token_pooling(self.net) if self.layer is None else _layer_pooling(self.layer)
            if token is None or not self._prefix:
                raise BackboneError(f"global_pool='token' needs a class token, and the map of {self.source} "
                                    f"({self.map_text}) comes without one; use global_pool='mean'")
            pooling = token
        self._pooling = pooling
        self.head = pooling.head if pooling.head is not None else nn.Identity()
        self._last = None

    @property
    def pooling_kind(self) -> str:
        return self._pooling.kind

    @property
    def poolable_subsets(self) -> bool:
        """True when the global is head(mean over positions), so any subset of positions re-pools."""
        return self._pooling.kind == "mean"

    @property
    def global_text(self) -> str:
        return self._pooling.text

    # -- the passes ------------------------------------------------------------------------------
    def _run(self, z: Tensor) -> Any:
        if self.layer is not None:
            return run_to(self.net, z, self.layer)
        return self.rule.run(self.net, z)

    def _to_map(self, raw: Any, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """Raw output -> ((B, C, h, w) map, (B, P, C) prefix tokens or None)."""
        where = f"layer {self.layer!r} of {self.source}" if self.layer is not None else self.source
        if isinstance(raw, Tensor) and raw.dim() == 4:
            if self.layer is None:
                return self.rule.finish(self.net, raw), None
            return (raw.permute(0, 3, 1, 2) if self._layer_nhwc else raw), None
        if isinstance(raw, Tensor) and raw.dim() == 3 and self.rule.tokens:
            return tokens_to_map(raw, self.rule.grid(self.net, z), self.rule.prefix_tokens(self.net), where,
                                 exact=self.layer is None)
        hint = "" if self.layer is not None else "; name the layer whose output is the map"
        raise BackboneError(f"{where} gives {shape_text(raw)}, not a (B, C, h, w) feature map{hint}")

    def _global(self, fmap: Tensor, prefix: Tensor | None) -> Tensor:
        p = self._pooling
        if p.kind == "mean":
            return self.head(fmap.mean(dim=(2, 3)))
        if p.kind == "map":
            assert p.of_map is not None
            return p.of_map(self.net, fmap)
        assert p.of_pass is not None and prefix is not None
        return p.of_pass(self.net, fmap, prefix)

    def forward(self, z: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, C, h, w) map (a class-token global is kept for ``pool``)."""
        fmap, prefix = self._to_map(self._run(z), z)
        if self._pooling.kind == "pass":
            self._last = (fmap, self._global(fmap, prefix))
        return fmap

    def forward_global(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) normalised images -> ((B, C, h, w) map, (B, D) the model's global), one pass."""
        fmap, prefix = self._to_map(self._run(z), z)
        return fmap, self._global(fmap, prefix)

    def pool(self, fmap: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, D): the global of a map. A global that needs the forward pass (a class
        token) is only given for the map returned by this module's latest ``forward`` call."""
        if self._pooling.kind != "pass":
            return self._global(fmap, None)
        last = self._last
        if last is None or not same_tensor(last[0], fmap):
            raise BackboneError(
                f"the global of {self.source} ({self.global_text}) is not a function of the map, so pool() takes "
                "only the map returned by the latest forward call; use forward_global, or global_pool='mean' to "
                "pool other maps or subsets of positions")
        return last[1]

    def extra_repr(self) -> str:
        return f"source={self.source!r}, layer={self.layer!r}, global_pool={self.global_pool!r}"
