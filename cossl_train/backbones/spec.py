"""Model specs: the one string that names a network from outside this package.

Grammar (``[...]`` is optional; weights are always a local file, nothing is ever downloaded)::

    torchvision:NAME[@WEIGHTS]        torchvision.models.get_model(NAME, weights=None) -> kind "torchvision"
    timm:NAME[@WEIGHTS]               timm.create_model(NAME, pretrained=False)      -> kind "timm"
    MODULE:FUNCTION[@WEIGHTS]         MODULE.FUNCTION() returning an nn.Module       -> kind "callable"
    module:MODULE:FUNCTION[@WEIGHTS]  the same, spelt out
    FILE.py:FUNCTION[@WEIGHTS]        the same, MODULE given as a Python file
    PATH                              anything else: a path (a cossl checkpoint)      -> kind "cossl"

The trainer (``backbone.name``) takes the first five; the analysis layer also takes checkpoint
paths and reads the weights file after ``@``. :func:`parse_spec` only reads the string (and asks
the import system whether MODULE exists, without importing it); building the network is
:func:`cossl_train.backbones.library.build_model`'s job.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import BackboneError

__all__ = ["LIBRARIES", "ModelSpec", "SpecKind", "cwd_on_path", "parse_spec"]

SpecKind = Literal["cossl", "torchvision", "timm", "callable"]

#: libraries whose architectures a spec can name directly
LIBRARIES = ("torchvision", "timm")

#: the explicit prefix of a callable spec (``module:pkg.mod:fn``)
MODULE_PREFIX = "module"

# Prefixes people reach for that would need a download or another framework: refused by name
# rather than left to fail as "no module named hf".
_NOT_SUPPORTED = {"hf", "hf-hub", "hf_hub", "huggingface", "hub", "torchhub", "torch.hub", "transformers",
                  "open_clip", "openclip", "tf", "tensorflow", "keras", "tfhub", "onnx", "jax", "flax"}
_URL_SCHEMES = {"http", "https", "ftp", "s3", "gs", "file"}
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
HOW = "use torchvision:NAME[@WEIGHTS], timm:NAME[@WEIGHTS] or MODULE:FUNCTION[@WEIGHTS]"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        kind: ``"cossl"``, ``"torchvision"``, ``"timm"`` or ``"callable"``.
        name: the path (cossl), the library's model name, or ``MODULE:FUNCTION``.
        weights: the local weights file after ``@`` (None: the architecture's own initialisation,
            or, for a callable, whatever weights it returns).
        text: the spec as given (what reports show as the model's source).

    >>> parse_spec("timm:resnet18@w.pth").weights
    PosixPath('w.pth')
    """

    kind: SpecKind
    name: str
    weights: Path | None
    text: str

    @property
    def module(self) -> str:
        """MODULE of a callable spec (a dotted module name or a ``.py`` file)."""
        return self.name.rpartition(":")[0]

    @property
    def function(self) -> str:
        """FUNCTION of a callable spec (may be dotted: ``models.build``)."""
        return self.name.rpartition(":")[2]

    @property
    def architecture(self) -> str:
        """The spec without its weights file (``timm:resnet18``)."""
        return self.text.partition("@")[0]


@contextlib.contextmanager
def cwd_on_path() -> Iterator[None]:
    """The working directory on ``sys.path`` for the duration: console scripts (unlike
    ``python -m``) do not put it there, yet ``mymodels:build`` means ./mymodels.py."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


def _module_exists(module: str) -> bool:
    if module.endswith(".py"):
        return Path(module).expanduser().is_file()
    top = module.split(".")[0]
    with cwd_on_path():
        try:
            return importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            return False


def _split_weights(spec: str, rest: str, what: str) -> tuple[str, Path | None]:
    name, at, weights = rest.partition("@")
    name, weights = name.strip(), weights.strip()
    if not name:
        raise BackboneError(f"model spec {spec!r} names no {what} ({HOW})")
    if at and not weights:
        raise BackboneError(f"model spec {spec!r} has nothing after '@': give a weights file or drop the '@'")
    if weights.partition("://")[0].lower() in _URL_SCHEMES and "://" in weights:
        raise BackboneError(f"model spec {spec!r}: weights are never downloaded; give a local file after '@'")
    return name, (Path(weights).expanduser() if weights else None)


def _callable(text: str, prefix: str, rest: str, explicit: bool) -> ModelSpec | None:
    """A ``MODULE:FUNCTION`` spec, or None when the string is not one (then it is a path)."""
    function = rest.partition("@")[0].strip()
    is_module = prefix.endswith(".py") or _DOTTED.fullmatch(prefix) is not None
    if not (is_module and _DOTTED.fullmatch(function)):
        if explicit:
            raise BackboneError(f"model spec {text!r}: write module:MODULE:FUNCTION with a dotted module name "
                                "(or a .py file) and a function name")
        return None
    if not _module_exists(prefix):
        raise BackboneError(f"unknown library or module {prefix!r} in model spec {text!r}: known libraries are "
                            f"{', '.join(LIBRARIES)}; MODULE:FUNCTION needs an importable module or a .py file")
    name, weights = _split_weights(text, rest, "function")
    return ModelSpec("callable", f"{prefix}:{name}", weights, text)


def parse_spec(spec: str) -> ModelSpec:
    """Read a model spec (module docstring) into a :class:`ModelSpec`.

    Bad syntax raises :class:`~cossl_train.errors.BackboneError` (one line). A string with no
    recognised ``PREFIX:`` is a path (kind ``"cossl"``), existing or not.

    >>> parse_spec("torchvision:resnet18").kind
    'torchvision'
    >>> parse_spec("module:torchvision.models:resnet18").name
    'torchvision.models:resnet18'
    """
    text = str(spec).strip()
    if not text:
        raise BackboneError(f"empty model spec ({HOW}, or a cossl checkpoint path)")
    prefix, colon, rest = text.partition(":")
    if not colon or Path(text).expanduser().exists():
        return ModelSpec("cossl", text, None, text)
    if prefix in LIBRARIES:
        name, weights = _split_weights(text, rest, f"{prefix} model")
        return ModelSpec(prefix, name, weights, text)  # type: ignore[arg-type]
    if prefix == MODULE_PREFIX:
        module, _, function = rest.partition(":")
        found = _callable(text, module.strip(), function if ":" in rest.partition("@")[0] else "", explicit=True)
        assert found is not None
        return ModelSpec("callable", found.name, found.weights, text)
    if prefix.lower() in _URL_SCHEMES and rest.startswith("//"):
        raise BackboneError(f"model spec {text!r} is a URL: nothing is downloaded; give a local file ({HOW})")
    if prefix.lower() in _NOT_SUPPORTED:
        raise BackboneError(f"unknown library {prefix!r} in model spec {text!r}: {HOW} "
                            f"(known libraries: {', '.join(LIBRARIES)})")
    found = _callable(text, prefix, rest, explicit=False)
    # a path with a colon in it: its loader reports a missing file
    return found if found is not None else ModelSpec("cossl", text, None, text)
