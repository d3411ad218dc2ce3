"""Any network as an encoder of the analysis layer: [0, 1] images in, a map of local representations out.

:class:`ExternalEncoder` honours the contract of ``cossl_train.encoder.Encoder``: ``forward(x)``
maps (B, 3, H, W) pixels in [0, 1] to a (B, C, h, w) feature map, ``pool(fmap)`` gives the global
representation (B, C), ``head`` is what ``pool`` applies after the spatial mean, ``num_features``
is the width a linear probe reads. Normalisation happens inside (images and adversarial budgets
stay in pixels).

Where the map comes from (the *layer rule*), unless ``layer`` names a submodule:

* timm CNNs: ``forward_features`` (channels-last outputs such as Swin's are permuted);
* timm ViTs (``forward_features`` returns tokens): the patch tokens after the final norm, laid out
  on the patch grid as (B, C, h, w); class and register tokens are not positions and are dropped;
* torchvision ``VisionTransformer``: the same, from its encoder;
* torchvision CNNs and other modules with an ``avgpool`` child: what the model's own forward pass
  feeds to ``avgpool`` (the output of ``layer4`` for a ResNet; RegNet, MobileNet, EfficientNet,
  ConvNeXt, Swin, Inception alike), taken by a pre-hook that stops the pass there;
* torchvision models without one (DenseNet): the output of ``features``;
* any other module: its own output, which must be (B, C, h, w).

``layer=NAME`` takes the output of that submodule instead, through a forward hook that also stops
the forward pass there (nothing after it runs). Its output must be (B, C, h, w), or, on a
transformer, (B, N, C) tokens that fill the patch grid (with or without the class/register tokens).

Global representation (``global_pool``):

* ``"mean"``: ``head(spatial mean of the map)``. For a timm CNN ``head`` is the model's own
  pre-logits step (e.g. ConvNeXt's norm; the identity for a ResNet) when the model pools by
  average; for a timm ViT it is its ``fc_norm``. With ``layer`` set, ``head`` is the identity:
  the model's head belongs to its last map. The mean of any subset of positions is a valid global
  representation, so patch dropping can re-pool (``poolable_subsets = True``).
* ``"token"`` (transformers with a class token): the class token of the same forward pass (then
  ``fc_norm`` where the model has one). It is not a function of the map, so ``pool(fmap)`` only
  accepts the map returned by the encoder's latest forward call, and a subset of positions cannot
  be re-pooled (``poolable_subsets = False``): patch dropping must refuse such an encoder or pool
  with ``"mean"``, saying so (``cossl_analysis.external.require_poolable_subsets``).

The default is the model's own pooling: the class token for a ViT that pools by token, the mean
for one that averages (timm's ``global_pool="avg"``) and for every CNN. ``global_description``
names the choice in words, for figures and reports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cossl_analysis.analyses._common import model_device, model_dtype
from cossl_analysis.errors import AnalysisError
from cossl_train.encoder import Normalize
from cossl_train.evaluate import eval_mode

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ExternalEncoder", "GlobalPool", "from_module"]

log = logging.getLogger("cossl_analysis")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

GlobalPool = Literal["token", "mean"]
_Mode = Literal["call", "timm", "tv_vit"]
_AUX_CHILDREN = ("AuxLogits", "aux1", "aux2")  # torchvision auxiliary classifiers, off the main path


class _Reached(BaseException):
    """Carries a hooked layer's output out of the forward pass, which then stops.

    A BaseException so that a model's own ``except Exception`` cannot swallow it.
    """

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output


class _Shared(nn.Module):
    """A step of a module registered elsewhere (the encoder's network), applied to (B, C) vectors.

    The module is kept outside ``_modules`` so that its tensors appear once in the encoder's
    state_dict; deep copies still follow the copied network (same object, one memo entry).
    """

    def __init__(self, module: nn.Module, step: Literal["call", "pre_logits"], nhwc: bool = False,
                 text: str = "") -> None:
        super().__init__()
        self.__dict__["_module"] = module
        self.step = step
        self.nhwc = nhwc
        self.text = text

    def forward(self, v: Tensor) -> Tensor:
        if self.step == "call":
            return self._module(v)
        # a 1x1 map whose average pooling is v itself: the model's head after its pooling
        x = v[:, None, None, :] if self.nhwc else v[:, :, None, None]
        return self._module.forward_head(x, pre_logits=True)

    def extra_repr(self) -> str:
        return self.text


@dataclass
class _Plan:
    """How to get the map out of ``net`` (see the module docstring)."""

    net: nn.Module
    mode: _Mode
    map_text: str
    skip: tuple[str, ...] = ()  # state_dict key prefixes of ``net`` that weights need not supply
    nhwc: bool = False
    tokens: bool = False  # may return (B, N, C) tokens to lay out on the patch grid
    prefix_tokens: int = 0
    class_token: bool = False
    own_pool: str = "mean"  # the model's own global pooling, in our terms
    head: nn.Module | None = None
    last_child: str | None = None  # the last child before the pooling (for messages)
    token_text: str = "patch tokens"  # the map in words when it is made of tokens
    stop_before: str | None = None  # the map is the input of this child (the global pooling)
    default_layer: str | None = None  # the map is the output of this child
    after_pool: tuple[str, ...] = ()  # children from the pooling on: not valid layers


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and hasattr(model, "forward_features")


def _is_tv_vit(model: nn.Module) -> bool:
    try:
        from torchvision.models import VisionTransformer
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return False
    return isinstance(model, VisionTransformer)


def _timm_classifier_skip(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of a timm model's classifier (when it has one): never part of the encoder."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names if not isinstance(_submodule(model, n), (nn.Identity, type(None))))


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _plan(model: nn.Module) -> _Plan:
    if _is_timm(model):
        fmt = str(getattr(model, "output_fmt", "NCHW"))
        fc_norm = getattr(model, "fc_norm", None)
        has_cls = getattr(model, "cls_token", None) is not None
        plan = _Plan(model, "timm", "output of forward_features (the last map before global pooling)",
                     skip=_timm_classifier_skip(model), nhwc=fmt.endswith("NHWC"), tokens=True,
                     prefix_tokens=int(getattr(model, "num_prefix_tokens", 1 if has_cls else 0)), class_token=has_cls,
                     token_text="patch tokens of forward_features")
        own = getattr(model, "global_pool", None)  # a string on token models (a pooling module on CNNs)
        if isinstance(own, str):
            plan.own_pool = "token" if own == "token" else "mean"
            if own not in ("token", "avg", "fast", "fastavg", "avgmax", "max"):
                plan.own_pool = "token" if has_cls else "mean"
                log.warning("%s pools its tokens with %r, which the analyses do not reproduce; global_pool=%r "
                            "is used", type(model).__name__, own, plan.own_pool)
        if isinstance(fc_norm, nn.Module) and not isinstance(fc_norm, nn.Identity):
            plan.head = _Shared(fc_norm, "call", text="fc_norm")
        return plan
    if _is_tv_vit(model):
        return _Plan(model, "tv_vit", "patch tokens of the encoder", skip=("heads.",), tokens=True,
                     prefix_tokens=1, class_token=True, own_pool="token", token_text="patch tokens of the encoder")
    names = [n for n, _ in model.named_children()]
    if "avgpool" in names:
        # The map is what the model's own forward pass feeds to its pooling (for a ResNet, the
        # output of layer4): a pre-hook takes it and stops the pass, so whatever the forward does
        # between its children (Inception's input transform, a custom scaling) is kept.
        at = names.index("avgpool")
        before = [n for n in names[:at] if n not in _AUX_CHILDREN]
        after = tuple(names[at + 1:])
        last = before[-1] if before else None
        return _Plan(model, "call", f"input of 'avgpool' (the last map before global pooling, after '{last}')",
                     skip=tuple(f"{n}." for n in after), last_child=last, stop_before="avgpool",
                     after_pool=("avgpool", *after))
    if type(model).__module__.startswith("torchvision.models") and "features" in names:
        log.info("%s has no 'avgpool' child: its map is the output of 'features'", type(model).__name__)
        return _Plan(model, "call", "output of 'features'", default_layer="features",
                     after_pool=tuple(names[names.index("features") + 1:]), last_child="features")
    return _Plan(model, "call", "the module's output")


def _shape_text(out: Any) -> str:
    if isinstance(out, Tensor):
        return "(" + ", ".join(map(str, out.shape)) + ")"
    return f"a {type(out).__name__}"


class ExternalEncoder(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> (B, C, h, w) map of local representations (module docstring).

    Built by :func:`from_module` or ``load_external``; not meant to be constructed directly.

    Attributes:
        net: the network run on the normalised images (the model itself).
        normalize: ``(x - mean) / std``, per channel.
        head: what ``pool`` applies after the spatial mean (``nn.Identity()`` for a plain mean).
        num_features: width C' of the global representation (what a probe reads).
        map_channels: channels C of the map.
        resolution: default evaluation side in pixels (the model's own input size).
        stride: pixels per map position at ``resolution`` (resolution / map side).
        global_pool: ``"mean"`` or ``"token"``.
        poolable_subsets: whether the global representation is a function of the mean over any
            subset of positions (True for ``"mean"``); patch dropping needs it.
        layer: the submodule the map comes from, or None for the layer rule.
        source: where the model comes from (a spec such as ``timm:resnet50@w.pth``, or a class name).
        map_description / global_description / description: the above in words, for figures.
        mean / std: the normalisation.
        weights: the weights file loaded, if any.
    """

    def __init__(self, plan: _Plan, mean: Sequence[float], std: Sequence[float], global_pool: GlobalPool | None,
                 layer: str | None, resolution: int | None, source: str) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = plan.net
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.source = source
        self.layer = layer
        self.weights: Path | None = None
        self.weights_skip = plan.skip  # state_dict prefixes of ``net`` a weights file need not supply
        self._mode: _Mode = plan.mode
        self._nhwc = plan.nhwc and layer is None
        self._tokens = plan.tokens
        self._prefix_tokens = plan.prefix_tokens
        self._class_token = plan.class_token
        self._stop_before = plan.stop_before
        self._default_layer = plan.default_layer
        self._last: tuple[Tensor, Tensor] | None = None
        self._has_token = False
        self._global_pool: GlobalPool = "mean"
        self.head: nn.Module = nn.Identity()
        self.resolution = int(resolution) if resolution is not None else _default_resolution(self.net)
        if self.resolution < 1:
            raise AnalysisError(f"resolution must be a positive number of pixels, got {self.resolution}")
        # One probe pass: the map's shape, whether a class token comes with it, and the head.
        fmap, token, raw = self._probe(self.resolution)
        _, channels, h, w = fmap.shape
        self.map_channels = int(channels)
        self._token_positions = raw.dim() == 3
        self.stride = self.resolution / max(1, min(h, w))
        self._grid_text = f"{h}x{w} at {self.resolution} px"
        map_text = plan.map_text if layer is None else f"output of layer '{layer}'"
        if raw.dim() == 3:
            kind = plan.token_text if layer is None else f"patch tokens of layer '{layer}'"
            map_text = f"{kind} ({self._dropped_tokens_text(raw, h * w)})"
        self.map_description = map_text
        self._set_head(plan, raw, channels)
        self._set_global_pool(global_pool, plan, has_token=token is not None)
        with eval_mode(self), torch.no_grad():
            self.num_features = int(self.pool(self(self._zeros(self.resolution))).shape[1])
        self._last = None
        log.info("%s", self.description)

    def __getstate__(self) -> dict[str, Any]:
        # the cached class token may carry an autograd graph, which neither copies nor pickles
        state = self.__dict__.copy()
        state["_last"] = None
        return state

    # -- construction helpers ------------------------------------------------------------------
    def _zeros(self, resolution: int) -> Tensor:
        return torch.zeros(1, 3, resolution, resolution, device=model_device(self), dtype=model_dtype(self))

    def _probe(self, resolution: int) -> tuple[Tensor, Tensor | None, Tensor]:
        """(map, class token or None, the network's raw output) of one zero image at ``resolution``."""
        with eval_mode(self), torch.no_grad():
            z = self.normalize(self._zeros(resolution))
            try:
                raw = self._run(z)
            except AnalysisError:
                raise
            except Exception as err:  # noqa: BLE001 - e.g. a ViT built for another input size
                line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                hint = ("; build a timm ViT with model_kwargs={'dynamic_img_size': True} to take other sizes"
                        if getattr(self.net, "patch_embed", None) is not None else "")
                raise AnalysisError(f"{self.source} cannot run on {resolution} px images ({line}); it was built "
                                    f"for {_default_resolution(self.net)} px{hint}") from None
            fmap, token = self._to_map(raw, z)
        return fmap, token, raw

    def _dropped_tokens_text(self, raw: Tensor, positions: int) -> str:
        extra = raw.shape[1] - positions
        if extra <= 0:
            return "no class token"
        names = ["class"] if self._class_token else []
        if getattr(self.net, "dist_token", None) is not None:
            names.append("distillation")
        registers = int(getattr(self.net, "num_reg_tokens", 0) or 0)
        if registers:
            names.append(f"{registers} register")
        if len(names) == 0 or extra != len(names) - (1 if registers else 0) + registers:
            return f"{extra} prefix tokens dropped"  # a layout this text does not know: say only how many
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"{listed} token{'s' if extra > 1 else ''} dropped"

    def _set_head(self, plan: _Plan, raw: Tensor, channels: int) -> None:
        if self.layer is not None:
            return  # the model's head belongs to its last map, not to an inner layer's
        if raw.dim() == 3:
            self.head = plan.head if plan.head is not None else nn.Identity()
            return
        if self._mode == "timm" and hasattr(self.net, "forward_head"):
            self.head = self._timm_cnn_head(channels)

    def _timm_cnn_head(self, channels: int) -> nn.Module:
        """The model's own step after average pooling, when it pools by average (else the identity)."""
        gen = torch.Generator().manual_seed(0)
        fmap = torch.randn(2, channels, 3, 3, generator=gen).to(device=model_device(self), dtype=model_dtype(self))
        raw = fmap.permute(0, 2, 3, 1) if self._nhwc else fmap
        head = _Shared(self.net, "pre_logits", nhwc=self._nhwc, text="the model's pre-logits head")
        with eval_mode(self), torch.no_grad():
            try:
                own = self.net.forward_head(raw, pre_logits=True)
            except Exception:  # noqa: BLE001 - no usable forward_head: pool by the plain mean
                return nn.Identity()
            mean = fmap.mean(dim=(2, 3))
            if own.shape == mean.shape and torch.allclose(own, mean, rtol=1e-5, atol=1e-6):
                return nn.Identity()
            via_mean = head(mean)
            if own.shape == via_mean.shape and torch.allclose(own, via_mean, rtol=1e-4, atol=1e-5):
                return head
        log.warning("%s does not pool its map by average; the global representation used is the spatial mean",
                    self.source)
        return nn.Identity()

    def _set_global_pool(self, global_pool: str | None, plan: _Plan, has_token: bool) -> None:
        self._has_token = has_token
        self.global_pool = global_pool if global_pool is not None else (plan.own_pool if has_token else "mean")

    # -- the contract --------------------------------------------------------------------------
    @property
    def global_pool(self) -> GlobalPool:
        """``"token"`` (the class token) or ``"mean"`` (of the positions); may be switched."""
        return self._global_pool

    @global_pool.setter
    def global_pool(self, value: str) -> None:
        if value not in ("token", "mean"):
            raise AnalysisError(f"global_pool must be 'token' or 'mean', got {value!r}")
        if value == "token" and not self._has_token:
            raise AnalysisError(f"global_pool='token' needs a class token, and the map of {self.source} "
                                f"({self.map_description}) comes without one; use global_pool='mean'")
        self._global_pool = value  # type: ignore[assignment]
        self._last = None

    @property
    def poolable_subsets(self) -> bool:
        """True when ``pool`` is a function of the mean over positions, so any subset can be re-pooled."""
        return self.global_pool == "mean"

    @property
    def global_description(self) -> str:
        base = "class token" if self.global_pool == "token" else (
            "mean of the patch tokens" if self._token_positions else "spatial mean of the map")
        extra = getattr(self.head, "text", "")
        return f"{base}, then {extra}" if extra else base

    @property
    def description(self) -> str:
        return (f"{self.source}: local = {self.map_description}, {self.map_channels} channels, {self._grid_text}; "
                f"global = {self.global_description}")

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, C, h, w) map of local representations."""
        z = self.normalize(x)
        fmap, token = self._to_map(self._run(z), z)
        if self.global_pool == "token":
            # pool() reads the class token of this very pass; the latest pass is kept (graph included)
            self._last = (fmap, token)  # type: ignore[assignment]
        return fmap

    def pool(self, fmap: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, C'): the global representation (``global_pool``, then ``head``)."""
        if self.global_pool == "mean":
            return self.head(fmap.mean(dim=(2, 3)))
        last = self._last
        if last is None or not _same_tensor(last[0], fmap):
            raise AnalysisError(
                f"global_pool='token': the class token of {self.source} is not a function of the map, so pool() "
                "takes only the map returned by this encoder's latest forward call; use global_pool='mean' to pool "
                "other maps or subsets of positions")
        return self.head(last[1])

    def embed(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, C') global representations: ``pool(self(x))``."""
        return self.pool(self(x))

    def set_resolution(self, resolution: int) -> None:
        """Evaluate at ``resolution`` px from now on (``resolution``, ``stride`` and the description follow);
        one-line ``AnalysisError`` when the model does not run at that size."""
        fmap, _, _ = self._probe(int(resolution))
        h, w = int(fmap.shape[2]), int(fmap.shape[3])
        self.resolution = int(resolution)
        self.stride = self.resolution / max(1, min(h, w))
        self._grid_text = f"{h}x{w} at {self.resolution} px"

    def map_size(self, resolution: int | None = None) -> tuple[int, int]:
        """(h, w) of the map of a ``resolution`` px image (default: ``self.resolution``), by probing."""
        fmap, _, _ = self._probe(int(resolution or self.resolution))
        return int(fmap.shape[2]), int(fmap.shape[3])

    def extra_repr(self) -> str:
        return f"source={self.source!r}, global_pool={self.global_pool!r}, layer={self.layer!r}"

    # -- running the network -------------------------------------------------------------------
    def _run(self, z: Tensor) -> Any:
        """The network's raw output for normalised images ``z``: a map, tokens, or the hooked output."""
        if self.layer is not None:
            return self._run_to(z, self.layer)
        if self._stop_before is not None:
            return self._run_to(z, self._stop_before, before=True)
        if self._default_layer is not None:
            return self._run_to(z, self._default_layer)
        if self._mode == "timm":
            return self.net.forward_features(z)
        if self._mode == "tv_vit":
            return self._tv_vit_tokens(z)
        return self.net(z)

    def _run_to(self, z: Tensor, name: str, before: bool = False) -> Any:
        """The output (``before``: the first input) of submodule ``name`` in the network's forward
        pass on ``z``; the pass stops there. Hooks live for one call only, so copies stay clean."""
        module = self.net.get_submodule(name)

        def stop_at_input(_module: nn.Module, inputs: Any) -> None:
            raise _Reached(inputs[0] if isinstance(inputs, tuple) and inputs else inputs)

        def stop_at_output(_module: nn.Module, _inputs: Any, output: Any) -> None:
            raise _Reached(output)

        handle = (module.register_forward_pre_hook(stop_at_input) if before
                  else module.register_forward_hook(stop_at_output))
        try:
            self.net(z)
        except _Reached as reached:
            return reached.output
        finally:
            handle.remove()
        raise AnalysisError(f"layer {name!r} of {self.source} is not run by its forward pass")

    def _tv_vit_tokens(self, z: Tensor) -> Tensor:
        # torchvision's VisionTransformer.forward, up to (and without) taking the class token
        net = self.net
        x = net._process_input(z)
        x = torch.cat([net.class_token.expand(len(x), -1, -1), x], dim=1)
        return net.encoder(x)

    def _to_map(self, raw: Any, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """Raw output -> ((B, C, h, w) map, (B, C) class token or None)."""
        where = f"layer {self.layer!r} of {self.source}" if self.layer is not None else self.source
        if isinstance(raw, Tensor) and raw.dim() == 4:
            return (raw.permute(0, 3, 1, 2) if self._nhwc else raw), None
        if isinstance(raw, Tensor) and raw.dim() == 3 and self._tokens:
            return self._tokens_to_map(raw, z, where)
        hint = "" if self.layer is not None else "; name the layer whose output is the map with layer=..."
        raise AnalysisError(f"{where} gives {_shape_text(raw)}, not a (B, C, h, w) feature map{hint}")

    def _grid(self, z: Tensor) -> tuple[int, int]:
        height, width = z.shape[-2:]
        patch_embed = getattr(self.net, "patch_embed", None)
        if patch_embed is not None and hasattr(patch_embed, "dynamic_feat_size"):
            h, w = patch_embed.dynamic_feat_size((height, width))
            return int(h), int(w)
        patch = getattr(self.net, "patch_size", None)
        if patch is None and patch_embed is not None:
            patch = getattr(patch_embed, "patch_size", None)
        if patch is None:
            return 0, 0
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
        return height // ph, width // pw

    def _tokens_to_map(self, tokens: Tensor, z: Tensor, where: str) -> tuple[Tensor, Tensor | None]:
        b, n, c = tokens.shape
        h, w = self._grid(z)
        prefix = self._prefix_tokens
        if h * w == 0 or n not in (h * w, h * w + prefix):
            side = int(round((n - prefix) ** 0.5)) if n > prefix else 0
            if side * side == n - prefix and side > 0:
                h = w = side
            elif int(round(n ** 0.5)) ** 2 == n:
                h = w = int(round(n ** 0.5))
                prefix = 0
            else:
                raise AnalysisError(f"{where} gives {n} tokens, which do not fill a patch grid")
        if n == h * w:
            prefix = 0
        token = tokens[:, 0] if prefix > 0 and self._class_token else None
        fmap = tokens[:, prefix:].transpose(1, 2).reshape(b, c, h, w)
        return fmap, token


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    """``b`` is ``a`` or a view of the same memory with the same shape (``detach()``, ``.float()``)."""
    if a is b:
        return True
    return a.shape == b.shape and a.device == b.device and a.data_ptr() == b.data_ptr() and a.stride() == b.stride()


def _default_resolution(net: nn.Module) -> int:
    """The side the model was built for: a ViT's patch-embedding size, timm's pretrained_cfg input
    size, else 224."""
    image_size = getattr(net, "image_size", None)  # torchvision VisionTransformer
    if isinstance(image_size, int):
        return image_size
    patch_embed = getattr(net, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is not None:
        return int(img_size if isinstance(img_size, int) else img_size[-1])
    cfg = getattr(net, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    if size:
        return int(size[-1])
    return 224


def _normalisation(model: nn.Module, mean: Sequence[float] | None,
                   std: Sequence[float] | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(mean if mean is not None else cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(std if std is not None else cfg.get("std") or IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3:
        raise AnalysisError(f"mean and std need 3 values each (one per RGB channel), got {len(mean)} and {len(std)}")
    if any(float(s) <= 0 for s in std):
        raise AnalysisError(f"std must be positive, got {std}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def prepare(model: nn.Module, layer: str | None = None, source: str | None = None) -> _Plan:
    """How ``model``'s map will be taken (the layer rule), checking ``layer`` before any work."""
    from cossl_train.encoder import Encoder

    if not isinstance(model, nn.Module):
        raise AnalysisError(f"from_module needs an nn.Module, got {type(model).__name__}")
    if isinstance(model, (Encoder, ExternalEncoder)):
        raise AnalysisError(f"{type(model).__name__} is already an encoder of the analysis layer: use it as it is")
    source = source or type(model).__name__
    plan = _plan(model)
    if layer is None:
        return plan
    if not layer or _submodule(plan.net, layer) is None:
        top = ", ".join(n for n, _ in plan.net.named_children()) or "none"
        raise AnalysisError(f"layer {layer!r} does not exist in {source} (its top-level modules: {top})")
    if layer.split(".")[0] in plan.after_pool:
        raise AnalysisError(f"layer {layer!r} of {source} is at or after its global pooling; name a layer before "
                            f"it (e.g. {plan.last_child!r})")
    return plan


def from_module(
    model: nn.Module,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layer: str | None = None,
    global_pool: GlobalPool | None = None,
    resolution: int | None = None,
    source: str | None = None,
) -> ExternalEncoder:
    """Wrap a network taking normalised images as an encoder of the analysis layer.

    Args:
        model: a torchvision or timm model, or any module (its weights as they are; not modified).
        mean, std: per-channel normalisation applied to the [0, 1] images (default: the model's timm
            ``pretrained_cfg``, else ImageNet's).
        layer: submodule whose output is the map (default: the layer rule, module docstring).
        global_pool: ``"token"`` or ``"mean"`` (default: the model's own pooling).
        resolution: default evaluation side in pixels (default: the model's input size, else 224).
        source: the model in words for reports (default: its class name).

    Returns:
        An :class:`ExternalEncoder` in eval mode, on the model's device.
    """
    source = source or type(model).__name__
    plan = prepare(model, layer, source)
    return encoder_from_plan(model, plan, mean, std, layer, global_pool, resolution, source)


def encoder_from_plan(model: nn.Module, plan: _Plan, mean: Sequence[float] | None, std: Sequence[float] | None,
                      layer: str | None, global_pool: GlobalPool | None, resolution: int | None,
                      source: str) -> ExternalEncoder:
    """The encoder of a :func:`prepare` d model (``load_external`` loads weights in between)."""
    mean_t, std_t = _normalisation(model, mean, std)
    encoder = ExternalEncoder(plan, mean_t, std_t, global_pool, layer, resolution, source)
    return encoder.to(model_device(model)).eval()
