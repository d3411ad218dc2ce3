"""Any other module, this package's own backbones included: its output is the map (it must be
(B, C, h, w)); the global is its spatial mean."""

from __future__ import annotations

from .base import Rule


class Generic(Rule):
    name = "module"
