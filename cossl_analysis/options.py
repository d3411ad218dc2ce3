"""The settings of every analysis, with their defaults in one place (:class:`AnalysisOptions`).

The command line (``cossl_analysis.cli``) and the Python API (``cossl_analysis.report.write_report``)
both fill an :class:`AnalysisOptions`; whichever subcommand runs an analysis, it reads the same
fields. The ``parse_*`` functions turn the comma-separated command-line values into them, with
one-line errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from cossl_analysis.corruptions import COMMON_CORRUPTIONS, CORRUPTION_GROUPS, EXTRA_CORRUPTIONS, SEVERITIES
from cossl_analysis.errors import AnalysisError

__all__ = [
    "ATTACKS",
    "INTERNAL_KINDS",
    "SWEEPS",
    "AnalysisOptions",
    "parse_attacks",
    "parse_corruptions",
    "parse_eps",
    "parse_fractions",
    "parse_internal_kinds",
    "parse_positions",
    "parse_severities",
    "parse_strengths",
    "parse_sweeps",
]

#: the sweeps of the robustness analysis (clean accuracy always runs)
SWEEPS: tuple[str, ...] = ("corruption", "adversarial", "internal")
ATTACKS: tuple[str, ...] = ("fgsm", "pgd")
INTERNAL_KINDS: tuple[str, ...] = ("noise", "zero", "mask")
DEFAULT_POSITIONS: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5))
DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
COMMON, EXTRA, GROUPS = COMMON_CORRUPTIONS, EXTRA_CORRUPTIONS, CORRUPTION_GROUPS


@dataclass
class AnalysisOptions:
    """Every setting of every analysis; the command line's defaults are these.

    Evaluation images: every checkpoint is evaluated on the same ``images`` images (0 = all), a
    random subset (seed ``seed``) of the validation split of the first checkpoint's data config.
    """

    # -- common
    images: int = 512
    seed: int = 0
    batch_size: int = 128
    device: str = "auto"
    threads: int | None = None
    train_probe: bool = False
    # -- erf (Figure 4)
    positions: tuple[tuple[float, float], ...] = DEFAULT_POSITIONS
    erf_images: int = 16
    show: int = 2
    chunk_size: int = 32
    # -- similarity (Figure 3B)
    sim_mode: str = "random"
    max_pairs: int | None = None
    # -- patch dropping
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    drop: str = "random"
    order: str = "border"
    drop_accuracy: bool = True
    # -- internal corruption / masking ("auto": backbone.layer3 when the encoder has it, else the output)
    internal_kinds: tuple[str, ...] = ("noise", "mask")
    internal_strengths: tuple[float, ...] | None = None
    layer: str = "auto"
    # -- robustness
    sweeps: tuple[str, ...] = SWEEPS
    corruptions: tuple[str, ...] = COMMON + EXTRA
    severities: tuple[int, ...] = SEVERITIES
    min_size: int = 32
    eps_255: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    attacks: tuple[str, ...] = ATTACKS
    pgd_steps: int = 10
    workers: int | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "erf_images", "show", "chunk_size", "pgd_steps"):
            if getattr(self, name) < 1:
                raise AnalysisError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("threads", "workers", "max_pairs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AnalysisError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.images < 0:
            raise AnalysisError(f"--images must be >= 0 (0 = the whole split), got {self.images}")
        if self.min_size < 32:
            raise AnalysisError(f"--min-size must be at least 32 (imagecorruptions' minimum), got {self.min_size}")
        _one_of(self.sim_mode, ("random", "same", "all"), "--sim-mode")
        _one_of(self.drop, ("random", "position"), "--drop")
        _one_of(self.order, ("border", "raster"), "--order")
        # the same checks as on the command line, for options built in Python
        parse_positions(self.positions)
        parse_fractions(",".join(map(str, self.fractions)))
        parse_sweeps(",".join(self.sweeps) or "none")
        parse_corruptions(",".join(self.corruptions))
        parse_severities(",".join(map(str, self.severities)))
        parse_eps(",".join(map(str, self.eps_255)))
        parse_attacks(",".join(self.attacks))
        parse_internal_kinds(",".join(self.internal_kinds))
        if self.internal_strengths is not None:
            parse_strengths(",".join(map(str, self.internal_strengths)))
            bounded = [k for k in self.internal_kinds if k != "noise"]
            if bounded and max(self.internal_strengths) > 1:
                raise AnalysisError(f"--internal-strengths for {', '.join(bounded)} are fractions and must be <= 1, "
                                    f"got {list(self.internal_strengths)}")

    def strengths(self, kind: str) -> tuple[float, ...]:
        """The internal corruption strengths swept for ``kind``."""
        from cossl_analysis.internal_corruption import DEFAULT_STRENGTHS

        return self.internal_strengths if self.internal_strengths is not None else DEFAULT_STRENGTHS[kind]

    def as_dict(self) -> dict[str, object]:
        """Plain values (for manifests and reports)."""
        return {f.name: (str(v) if isinstance(v := getattr(self, f.name), Path) else v) for f in fields(self)}


def _one_of(value: str, valid: Sequence[str], what: str) -> None:
    if value not in valid:
        raise AnalysisError(f"{what} {value!r} is not one of {', '.join(valid)}")


def _split(spec: str) -> list[str]:
    return [part.strip() for part in str(spec).split(",") if part.strip()]


def _numbers(spec: str, what: str, cast: type = float) -> list:
    out = []
    for part in _split(spec):
        try:
            out.append(cast(part))
        except ValueError:
            raise AnalysisError(f"{what} {part!r} is not {'an integer' if cast is int else 'a number'}") from None
    if not out:
        raise AnalysisError(f"no {what} given in {spec!r}")
    return out


def parse_corruptions(spec: str) -> tuple[str, ...]:
    """``"all"`` (19), ``"common"`` (the 15 ImageNet-C ones), group names (``noise``, ``blur``,
    ``weather``, ``digital``, ``extra``) and corruption names, comma-separated; canonical order."""
    chosen: set[str] = set()
    for part in _split(spec):
        if part in ("all", "common"):
            chosen.update(COMMON + (EXTRA if part == "all" else ()))
        elif part in GROUPS:
            chosen.update(GROUPS[part])
        elif part in COMMON + EXTRA:
            chosen.add(part)
        else:
            raise AnalysisError(f"unknown corruption {part!r}; valid: all, common, {', '.join(GROUPS)}, "
                                f"{', '.join(COMMON + EXTRA)}")
    if not chosen:
        raise AnalysisError(f"no corruption selected by {spec!r}")
    return tuple(name for name in COMMON + EXTRA if name in chosen)


def parse_severities(spec: str) -> tuple[int, ...]:
    """Comma-separated integers from 1 to 5, e.g. ``"1,3,5"``."""
    values = _numbers(spec, "severity", int)
    for value in values:
        if value not in SEVERITIES:
            raise AnalysisError(f"severity {value} is outside 1-5 (imagecorruptions has severities 1 to 5)")
    return tuple(sorted(set(values)))


def parse_eps(spec: str) -> tuple[float, ...]:
    """Comma-separated L-inf budgets in /255 units, e.g. ``"0.5,1,2,4"`` (0 is the clean accuracy)."""
    values = _numbers(spec, "eps")
    for value in values:
        if not 0 <= value <= 255:  # also rejects NaN
            raise AnalysisError(f"eps {value:g} must be within 0-255 (budgets are in /255 units of pixel values)")
    return tuple(sorted(set(values)))


def parse_strengths(spec: str) -> tuple[float, ...]:
    """Comma-separated internal corruption strengths (>= 0; zero and mask: fractions <= 1)."""
    values = _numbers(spec, "strength")
    for value in values:
        if not value >= 0:
            raise AnalysisError(f"strength {value:g} must be >= 0")
    return tuple(sorted(set(values)))


def parse_fractions(spec: str) -> tuple[float, ...]:
    """Comma-separated fractions of local representations to drop, in [0, 1]."""
    values = _numbers(spec, "fraction")
    if not all(0.0 <= f <= 1.0 for f in values):
        raise AnalysisError(f"--fractions must lie in [0, 1], got {values}")
    return tuple(values)


def parse_positions(positions: Sequence[Sequence[float]] | str) -> tuple[tuple[float, float], ...]:
    """Normalised (row, col) feature-map positions: pairs, or ``"0,0;0,0.5"`` on the command line."""
    items = [_numbers(p, "position") for p in positions.split(";")] if isinstance(positions, str) else positions
    out = []
    for p in items:
        if len(p) != 2 or not all(0.0 <= float(v) <= 1.0 for v in p):
            raise AnalysisError(f"a position is ROW,COL with both in [0, 1], got {list(p)}")
        out.append((float(p[0]), float(p[1])))
    if not out:
        raise AnalysisError("no position given")
    return tuple(out)


def _parse_choices(spec: str, valid: Sequence[str], what: str, allow_none: bool = False) -> tuple[str, ...]:
    parts = _split(spec)
    if allow_none and parts == ["none"]:
        return ()
    for part in parts:
        if part not in valid:
            raise AnalysisError(f"unknown {what} {part!r}; valid: {', '.join(valid)}{', none' if allow_none else ''}")
    if not parts:
        raise AnalysisError(f"no {what} given in {spec!r}")
    return tuple(name for name in valid if name in parts)


def parse_attacks(spec: str) -> tuple[str, ...]:
    """Comma-separated attacks out of ``ATTACKS`` (``fgsm``, ``pgd``)."""
    return _parse_choices(spec, ATTACKS, "attack")


def parse_internal_kinds(spec: str) -> tuple[str, ...]:
    """Comma-separated internal corruption kinds: ``noise``, ``zero``, ``mask``."""
    return _parse_choices(spec, INTERNAL_KINDS, "internal corruption kind")


def parse_sweeps(spec: str) -> tuple[str, ...]:
    """Comma-separated sweeps out of ``SWEEPS``, or ``none`` (clean accuracy and large-crop study only)."""
    return _parse_choices(spec, SWEEPS, "sweep", allow_none=True)
