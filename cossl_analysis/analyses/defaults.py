"""The analyses' names and default settings, free of torch: the settings (``cossl_analysis.config``)
and ``cossl-analysis --help`` read them without loading the numerical stack (docs/analysis.md has
their meaning). The analysis modules re-export them under the same names."""

from __future__ import annotations

__all__ = ["ATTACKS", "DEFAULT_FRACTIONS", "DEFAULT_POSITIONS", "DEFAULT_STRENGTHS", "KINDS"]

#: adversarial attacks (``adversarial``)
ATTACKS: tuple[str, ...] = ("fgsm", "pgd")
#: Figure 4's normalised (row, col) feature-map positions (``erf``)
DEFAULT_POSITIONS: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5))
#: fractions of the local representations dropped by default (``patch_drop``)
DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
#: kinds of internal corruption and their default strengths (``internal_corruption``)
KINDS: tuple[str, ...] = ("noise", "zero", "mask")
DEFAULT_STRENGTHS: dict[str, tuple[float, ...]] = {
    "noise": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    "zero": (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
    "mask": (0.0, 0.1, 0.25, 0.5, 0.75, 0.9),
}
