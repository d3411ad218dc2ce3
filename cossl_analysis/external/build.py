"""``load_external``: a model spec (``torchvision:``, ``timm:``, ``MODULE:FUNCTION``) as a ready encoder.

Architectures come from the library with no weights of theirs (torchvision ``weights=None``, timm
``pretrained=False``): nothing is ever downloaded. Weights come from the local file after ``@``
(``cossl_analysis.external.weights``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cossl_analysis.errors import AnalysisError
from cossl_analysis.external.encoder import ExternalEncoder, GlobalPool, encoder_from_plan, prepare
from cossl_analysis.external.spec import ModelSpec, cwd_on_path, parse_spec
from cossl_analysis.external.weights import load_weights

__all__ = ["build_model", "load_external"]

log = logging.getLogger("cossl_analysis")

# torch.nn.init functions that layers call while they are built (reset_parameters, torchvision's
# and timm's init loops): all overwritten when a weights file supplies every tensor.
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Build without torch's random initialisation (a ResNet-50 spends most of its build time in
    it), for architectures whose tensors all come from a weights file next. Tensors the file does
    not supply are initialised afterwards (:func:`_reinit_unloaded`). Not thread-safe: it swaps
    functions of ``torch.nn.init`` for the duration."""
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS if hasattr(torch.nn.init, name)}
    for name in saved:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _reinit_unloaded(model: nn.Module, loaded: set[str]) -> None:
    """Initialise (``reset_parameters``) every module of ``model`` holding a parameter that the
    weights did not supply (a classifier outside the encoder), so nothing is left uninitialised."""
    for name, module in model.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if any(p not in loaded for p in own) and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _did_you_mean(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _torchvision(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in names:
        raise AnalysisError(f"unknown torchvision model {name!r}{_did_you_mean(name, names)}")
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as err:
        raise AnalysisError(f"cannot build torchvision:{name} with {dict(kwargs)}: {_first_line(err)}") from None
    # Like timm's num_classes=0: the classifier is not part of the encoder, and left in place it
    # would hold fresh random weights (its keys in a file are dropped).
    names = [n for n, _ in model.named_children()]
    after = names[names.index("avgpool") + 1:] if "avgpool" in names else [n for n in ("heads", "classifier")
                                                                             if n in names]
    for child in after:
        setattr(model, child, nn.Identity())
    return model


def _timm(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise AnalysisError(f"unknown timm model {name!r}{_did_you_mean(name.split('.')[0], timm.list_models())}")
    # num_classes=0: the classifier is not part of the encoder (its keys in a file are dropped)
    options = {"num_classes": 0, **kwargs, "pretrained": False}
    try:
        return timm.create_model(name, **options)
    except (TypeError, ValueError, RuntimeError) as err:
        raise AnalysisError(f"cannot build timm:{name} with {dict(kwargs)}: {_first_line(err)}") from None


def _import(module: str) -> Any:
    if module.endswith(".py"):
        path = Path(module).expanduser().resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise AnalysisError(f"cannot import {module}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, mod)
        spec.loader.exec_module(mod)
        return mod
    with cwd_on_path():
        return importlib.import_module(module)


def _callable(spec: ModelSpec, kwargs: Mapping[str, Any]) -> nn.Module:
    try:
        obj: Any = _import(spec.module)
    except AnalysisError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's module failed to import: say so in one line
        raise AnalysisError(f"cannot import {spec.module!r} for model spec {spec.text!r}: {_first_line(err)}") from None
    for part in spec.function.split("."):
        if not hasattr(obj, part):
            raise AnalysisError(f"{spec.module!r} has no {spec.function!r} (model spec {spec.text!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise AnalysisError(f"{spec.module}:{spec.function} is a {type(obj).__name__}, not a function returning "
                            "an nn.Module")
    try:
        model = obj(**kwargs)
    except Exception as err:  # noqa: BLE001
        raise AnalysisError(f"calling {spec.module}:{spec.function}() failed: {_first_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise AnalysisError(f"{spec.module}:{spec.function}() returned a {type(model).__name__}, not an nn.Module")
    return model


def build_model(spec: str | ModelSpec, model_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """The architecture a (non-cossl) spec names, without loading the spec's weights file."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    kwargs = dict(model_kwargs or {})
    if spec.kind == "torchvision":
        return _torchvision(spec.name, kwargs)
    if spec.kind == "timm":
        return _timm(spec.name, kwargs)
    if spec.kind == "callable":
        return _callable(spec, kwargs)
    raise AnalysisError(f"{spec.text} is a cossl checkpoint: load it with cossl_analysis.load_checkpoint "
                        "(load_external takes torchvision:, timm: and MODULE:FUNCTION specs)")


def load_external(
    spec: str | ModelSpec,
    layer: str | None = None,
    global_pool: GlobalPool | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
    model_kwargs: Mapping[str, Any] | None = None,
) -> ExternalEncoder:
    """A model spec's architecture with its weights file loaded, as an :class:`ExternalEncoder`.

    Args:
        spec: ``torchvision:NAME[@WEIGHTS]``, ``timm:NAME[@WEIGHTS]`` or ``MODULE:FUNCTION[@WEIGHTS]``.
        layer, global_pool, mean, std, resolution: as :func:`from_module`.
        device: where the encoder lives.
        model_kwargs: keyword arguments for the architecture's builder (``{"img_size": 64}`` for a
            timm ViT, ``{"dynamic_img_size": True}`` to let it take any input size).

    Returns:
        The encoder, in eval mode, on ``device``; ``weights`` names the file loaded. Without a
        weights file the architecture keeps its random initialisation (a warning says so).
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.kind != "cossl" and spec.weights is not None and not spec.weights.is_file():
        what = "is a folder, not a file" if spec.weights.is_dir() else "does not exist"
        raise AnalysisError(f"weights file {spec.weights} {what} (model spec {spec.text!r})")
    # A callable's own code may rely on its initialisation; library architectures do not.
    skip_init = spec.weights is not None and spec.kind in ("torchvision", "timm")
    with _no_init() if skip_init else contextlib.nullcontext():
        model = build_model(spec, model_kwargs)
    model = model.to(device)
    label = spec.text.partition("@")[0]
    plan = prepare(model, layer, spec.text)
    # weights before the encoder is built: it probes the network (and compares its head's outputs)
    if spec.weights is None:
        log.warning("%s: no weights file given; the architecture keeps its random initialisation", label)
    else:
        fit = load_weights(plan.net, spec.weights, label, skip=plan.skip)
        if skip_init:
            _reinit_unloaded(plan.net, set(fit.state))
    encoder = encoder_from_plan(model, plan, mean, std, layer, global_pool, resolution, spec.text)
    encoder.weights = spec.weights
    return encoder.to(device).eval()
