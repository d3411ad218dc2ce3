"""Networks named by a model spec (``torchvision:``, ``timm:``, ``MODULE:FUNCTION``), built with
their libraries' own code and no weights of theirs (torchvision ``weights=None``, timm
``pretrained=False``): nothing is ever downloaded.

A library network is built without its final classifier (timm ``num_classes=0``; torchvision's last
``nn.Linear`` replaced by ``nn.Identity``): it is not part of an encoder, and left in place it would
hold fresh random weights. What comes before that layer (ConvNeXt's norm, MobileNetV3's hidden
layer) stays: it is part of the model's own global representation.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import BackboneError
from .spec import ModelSpec, cwd_on_path, parse_spec

__all__ = ["build_model", "classifier_keys", "final_linear"]

#: top-level children that hold a torchvision model's classifier, in the models' own names
_CLASSIFIER_CHILDREN = ("fc", "classifier", "heads", "head")


def _did_you_mean(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def final_linear(model: nn.Module) -> str | None:
    """Dotted name of the model's final classification layer: the last ``nn.Linear`` (or the
    ``nn.Identity`` that replaced it) in the last of its ``fc`` / ``classifier`` / ``heads`` /
    ``head`` children; None when there is none (a module without a classifier)."""
    children = dict(model.named_children())
    names = [n for n in children if n in _CLASSIFIER_CHILDREN]
    if not names:
        return None
    child = children[names[-1]]
    if isinstance(child, (nn.Linear, nn.Identity)):
        return names[-1]
    if isinstance(child, nn.Sequential) and len(child) and isinstance(child[-1], (nn.Linear, nn.Identity)):
        return f"{names[-1]}.{list(child._modules)[-1]}"
    return None


def classifier_keys(model: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of the model's classifier (weights files need not supply them)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") if type(model).__module__.startswith("timm.") else final_linear(model)
    names = (names,) if isinstance(names, str) else tuple(names or ())
    present = []
    for n in names:
        try:
            if not isinstance(model.get_submodule(n), nn.Identity):
                present.append(f"{n}.")
        except AttributeError:
            continue
    return tuple(present)


def _torchvision(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in names:
        raise BackboneError(f"unknown torchvision model {name!r}{_did_you_mean(name, names)}")
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as err:
        raise BackboneError(f"cannot build torchvision:{name} with {dict(kwargs)}: {first_line(err)}") from None
    last = final_linear(model)
    if last is not None:
        model.set_submodule(last, nn.Identity())
    return model


def _timm(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise BackboneError(f"unknown timm model {name!r}{_did_you_mean(name.split('.')[0], timm.list_models())}")
    options = {"num_classes": 0, **kwargs, "pretrained": False}
    try:
        return timm.create_model(name, **options)
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:
        raise BackboneError(f"cannot build timm:{name} with {dict(kwargs)}: {first_line(err)}") from None


def _import(module: str) -> Any:
    if module.endswith(".py"):
        path = Path(module).expanduser().resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise BackboneError(f"cannot import {module}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, mod)
        spec.loader.exec_module(mod)
        return mod
    with cwd_on_path():
        return importlib.import_module(module)


def _callable(spec: ModelSpec, kwargs: Mapping[str, Any]) -> nn.Module:
    try:
        obj: Any = _import(spec.module)
    except BackboneError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's module failed to import: say so in one line
        raise BackboneError(f"cannot import {spec.module!r} for model spec {spec.text!r}: {first_line(err)}") from None
    for part in spec.function.split("."):
        if not hasattr(obj, part):
            raise BackboneError(f"{spec.module!r} has no {spec.function!r} (model spec {spec.text!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise BackboneError(f"{spec.module}:{spec.function} is a {type(obj).__name__}, not a function returning "
                            "an nn.Module")
    try:
        model = obj(**kwargs)
    except Exception as err:  # noqa: BLE001
        raise BackboneError(f"calling {spec.module}:{spec.function}() failed: {first_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise BackboneError(f"{spec.module}:{spec.function}() returned a {type(model).__name__}, not an nn.Module")
    return model


def build_model(spec: str | ModelSpec, model_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """The network a (non-checkpoint) spec names, freshly initialised; the spec's weights file is
    not read here.

    Args:
        spec: ``torchvision:NAME``, ``timm:NAME`` or ``MODULE:FUNCTION`` (a string or parsed).
        model_kwargs: keyword arguments for the library's builder or the function
            (``{"img_size": 32, "patch_size": 4}`` for a timm ViT).

    Raises:
        BackboneError: one line naming the spec (unknown model, bad keyword, failed import).

    >>> build_model("timm:resnet18").num_features
    512
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    kwargs = dict(model_kwargs or {})
    if spec.kind == "torchvision":
        return _torchvision(spec.name, kwargs)
    if spec.kind == "timm":
        return _timm(spec.name, kwargs)
    if spec.kind == "callable":
        return _callable(spec, kwargs)
    raise BackboneError(f"{spec.text!r} is not a model spec: a checkpoint path names no architecture "
                        "(torchvision:NAME, timm:NAME or MODULE:FUNCTION do)")
