"""The method family: one module per base method, each composing the one CO term.

``method.name`` is a base method (``byol``, ``dino``, ``mocov3``, ``simclr``) or its CO form
(``co_<base>``): the base method with :mod:`~cossl_train.methods.co_term` attached. Adding a base
method is one new module with a ``build(cfg, encoder) -> SSLMethod`` function (its parts: heads, a
:class:`~cossl_train.losses.PairLoss`, momentum or not) and one line in :data:`BASE_METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import Config
from ..encoder import Encoder, build_encoder
from ..losses import PairLoss, view_pairs
from . import byol, dino, mocov3, simclr
from .base import MethodOutput, SSLMethod, make_target
from .co_term import LocalHeads, attach

#: base method name -> builder
BASE_METHODS: dict[str, Callable[[Config, Encoder], SSLMethod]] = {
    "byol": byol.build,
    "dino": dino.build,
    "mocov3": mocov3.build,
    "simclr": simclr.build,
}

#: display names, for reports
DISPLAY_NAMES: dict[str, str] = {"byol": "BYOL", "dino": "DINO", "mocov3": "MoCo-v3", "simclr": "SimCLR"}


def method_names() -> list[str]:
    """Every valid ``method.name``: the base methods and their CO forms."""
    return [*BASE_METHODS, *(f"co_{name}" for name in BASE_METHODS)]


def base_name(name: str) -> str:
    """``co_byol`` -> ``byol``; a base name is returned as is."""
    return name[3:] if name.startswith("co_") else name


def display_name(name: str) -> str:
    """``co_byol`` -> ``CO-BYOL``."""
    base = DISPLAY_NAMES.get(base_name(name), base_name(name))
    return f"CO-{base}" if name.startswith("co_") else base


def build_method(cfg: Config, encoder: Encoder | None = None) -> SSLMethod:
    """The method named by ``cfg.method.name``; a CO method gets its term after the base parts."""
    name = cfg.method.name
    if base_name(name) not in BASE_METHODS:
        raise ValueError(f"method.name={name!r} is not one of {', '.join(method_names())}")
    method = BASE_METHODS[base_name(name)](cfg, encoder if encoder is not None else build_encoder(cfg))
    return attach(method, cfg.co) if name.startswith("co_") else method


__all__ = [
    "BASE_METHODS",
    "LocalHeads",
    "MethodOutput",
    "PairLoss",
    "SSLMethod",
    "attach",
    "base_name",
    "build_encoder",
    "build_method",
    "display_name",
    "make_target",
    "method_names",
    "view_pairs",
]
