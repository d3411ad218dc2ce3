"""``load_external``: a model spec (``torchvision:``, ``timm:``, ``MODULE:FUNCTION``) as a ready encoder.

Architectures come from the library with no weights of theirs (torchvision ``weights=None``, timm
``pretrained=False``; ``cossl_train.backbones.library``): nothing is ever downloaded. Weights come
from the local file after ``@`` (``cossl_analysis.external.weights``); where they came from is the
encoder's ``provenance``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cossl_analysis.errors import AnalysisError
from cossl_analysis.external.encoder import ExternalEncoder, GlobalPool, analysis_errors, check_model, encoder_of
from cossl_analysis.external.weights import WeightsFit, load_weights
from cossl_train.backbones.library import build_model as _build_model
from cossl_train.backbones.library import classifier_keys
from cossl_train.backbones.spec import ModelSpec
from cossl_train.backbones.spec import parse_spec as _parse_spec

__all__ = ["build_model", "load_external", "parse_spec", "sha256"]

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


def parse_spec(spec: str) -> ModelSpec:
    """``cossl_train.backbones.spec.parse_spec`` with its errors as ``AnalysisError``."""
    with analysis_errors():
        return _parse_spec(spec)


def build_model(spec: str | ModelSpec, model_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """The architecture a (non-cossl) spec names, without loading the spec's weights file
    (``cossl_train.backbones.library.build_model``, errors as ``AnalysisError``)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "cossl":
        raise AnalysisError(f"{spec.text} is a cossl checkpoint: load it with cossl_analysis.load_checkpoint "
                            "(load_external takes torchvision:, timm: and MODULE:FUNCTION specs)")
    with analysis_errors():
        return _build_model(spec, model_kwargs)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _provenance(spec: ModelSpec, fit: WeightsFit | None, skipped: tuple[str, ...], model: nn.Module) -> dict[str, Any]:
    """Where the encoder's weights came from, for result files and the report."""
    library = {"torchvision": "torchvision weights=None", "timm": "timm pretrained=False"}.get(spec.kind)
    record: dict[str, Any] = {"source": spec.text, "architecture": spec.architecture,
                              "pretrained": f"{library} (nothing downloaded)" if library else "whatever "
                              f"{spec.module}:{spec.function}() returned"}
    if fit is None:
        record["weights"] = ("none: random initialisation" if library else "none: the function's own")
        return record
    assert spec.weights is not None
    total = len([k for k in model.state_dict() if not k.startswith(skipped)])
    record.update({
        "weights": str(spec.weights.resolve()), "sha256": sha256(spec.weights),
        "container": fit.where or "(top level)", "prefix": fit.prefix, "loaded": len(fit.state),
        "architecture_keys": total, "missing": list(fit.missing), "not_required": list(skipped),
        "dropped": dict(fit.dropped), "ignored_containers": list(fit.ignored),
    })
    return record


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
    check_model(model, layer, spec.text)
    # weights before the encoder is built: it probes the network (and compares its head's outputs)
    fit, skipped = None, classifier_keys(model)
    if spec.weights is None:
        log.warning("%s: no weights file given; the architecture keeps its random initialisation", spec.architecture)
    else:
        fit = load_weights(model, spec.weights, spec.architecture, skip=skipped)
        if skip_init:
            _reinit_unloaded(model, set(fit.state))
    encoder = encoder_of(model, mean, std, layer, global_pool, resolution, spec.text)
    encoder.weights = spec.weights
    encoder.provenance = _provenance(spec, fit, skipped, model)
    return encoder.to(device).eval()
