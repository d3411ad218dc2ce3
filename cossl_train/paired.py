"""Two methods compared seed by seed: per-seed differences, their mean ± std, how many are
positive, the smallest difference the seeds can resolve, and one sentence saying which way it falls.

Every standard deviation of the package is the sample one (ddof = 1): with one value there is no
spread, and none is printed (:func:`mean_std_text`). The resolvable difference is the half-width of
the 95 % confidence interval of the mean paired difference, t(0.975, n - 1) * sd / sqrt(n): a mean
difference inside it is not told apart from 0 by these seeds. With one seed nothing is resolved
(``resolvable`` is inf). "No difference" is said only where the interval is narrow: it lies within
± ``margin``, a difference too small to matter for that number (docs/analysis.md gives them).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) over seeds: the one formula behind every
    ``mean ± std`` of the package. Values that are None are left out; (NaN, NaN) when none is
    left; the std is NaN for a single value (there is no spread) and when a value is not finite.

    >>> mean_std([1.0, 2.0, 3.0])
    (2.0, 1.0)
    >>> mean_std([0.5])
    (0.5, nan)
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return math.nan, math.nan
    if len(vals) == 1:
        return vals[0], math.nan
    # statistics.stdev is exact (fractions) but cannot take NaN or infinities
    std = statistics.stdev(vals) if all(map(math.isfinite, vals)) else math.nan
    return statistics.fmean(vals), std


def mean_std_text(values: Iterable[float | None], digits: int = 2, unit: str = "", sign: bool = False) -> str:
    """``mean ± std`` over the values (None left out) with ``digits`` decimals; one value: the value
    alone and ``(n = 1)``, never a spread of 0; none: ``-``.

    >>> mean_std_text([1.0, 2.0, 3.0])
    '2.00 ± 1.00'
    >>> mean_std_text([0.5], unit=" pt")
    '0.50 pt (n = 1)'
    """
    vals = [v for v in values if v is not None]
    mean, std = mean_std(vals)
    if math.isnan(mean):
        return "-"
    m = f"{mean:{'+' if sign else ''}.{digits}f}"
    if len(vals) < 2:
        return f"{m}{unit} (n = 1)"
    return f"{m} ± {std:.{digits}f}{unit}"


def binomial_error(accuracy: float, n: int, percent: bool = False) -> float:
    """Standard error sqrt(p (1 - p) / n) of an accuracy measured on n images; ``percent``: the
    accuracy is given (and the error returned) in percent."""
    scale = 100.0 if percent else 1.0
    p = accuracy / scale
    return scale * math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else float("nan")


@dataclass(frozen=True)
class Paired:
    """``a - b`` seed by seed (a: e.g. the CO method, b: its base method)."""

    a: str
    b: str
    metric: str
    diffs: tuple[float, ...]
    unit: str = ""
    #: a difference too small to matter for this number; "no difference" is said only when the
    #: whole 95 % interval lies within ± margin (None: never said)
    margin: float | None = None

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return mean_std(self.diffs)[0]

    @property
    def std(self) -> float:
        return mean_std(self.diffs)[1]

    @property
    def positive(self) -> int:
        return sum(d > 0 for d in self.diffs)

    @property
    def resolvable(self) -> float:
        """Half-width of the 95 % confidence interval of the mean difference."""
        if self.n < 2:
            return math.inf
        from scipy.stats import t

        return float(t.ppf(0.975, self.n - 1) * self.std / math.sqrt(self.n))

    @property
    def resolved(self) -> bool:
        return abs(self.mean) > self.resolvable

    @property
    def negligible(self) -> bool:
        """The interval is narrow: the whole 95 % interval of the mean difference lies within ± margin."""
        return self.margin is not None and self.n >= 2 and abs(self.mean) + self.resolvable <= self.margin

    def summary(self, digits: int = 2) -> str:
        """``-0.90 ± 7.10 (1/3 > 0; resolves ±17.6)``; one seed: ``+0.90 (n = 1; resolves nothing)``."""
        if self.n < 2:
            return f"{mean_std_text(self.diffs, digits, self.unit, sign=True)[:-1]}; resolves nothing)"
        return (f"{self.mean:+.{digits}f} ± {self.std:.{digits}f}{self.unit} ({self.positive}/{self.n} > 0; "
                f"resolves ±{self.resolvable:.{digits}f}{self.unit})")

    def verdict(self, digits: int = 2) -> str:
        """Which way the difference falls, without the numbers :meth:`summary` gives: higher or lower
        (resolved), no difference (the interval is narrow), or cannot tell (the interval is wider
        than the difference)."""
        if self.n < 2:
            return "cannot tell with one seed: one seed has no spread to tell a difference from noise."
        hw = f"±{self.resolvable:.{digits}f}{self.unit}"
        if self.resolved:
            side = "higher" if self.mean > 0 else "lower"
            return (f"{self.a} is {side} by {abs(self.mean):.{digits}f}{self.unit}, beyond what the seeds' "
                    f"spread explains ({hw}).")
        if self.negligible:
            return (f"no difference: the 95% interval of the mean difference, {self.mean:+.{digits}f} "
                    f"± {self.resolvable:.{digits}f}{self.unit}, lies "
                    f"within ±{self.margin:g}{self.unit}, a difference too small to matter here.")
        return (f"cannot tell with {self.n} seeds ({hw}): the 95% interval of the mean difference is wider than the "
                "difference itself.")

    def sentence(self, digits: int = 2) -> str:
        """The comparison in one sentence: the numbers, then the :meth:`verdict`."""
        return f"{self.metric}: {self.a} - {self.b} = {self.summary(digits)}: {self.verdict(digits)}"


def paired(a: str, b: str, metric: str, values_a: Sequence[float], values_b: Sequence[float],
           unit: str = "", margin: float | None = None) -> Paired:
    """Pair ``values_a`` and ``values_b`` by position (the same seeds, in the same order);
    ``margin``: see :class:`Paired`.

    >>> paired("CO", "base", "top-1", [52.0, 55.0, 51.0], [50.0, 52.0, 50.0], " pt").summary(1)
    '+2.0 ± 1.0 pt (3/3 > 0; resolves ±2.5 pt)'
    """
    if len(values_a) != len(values_b):
        raise ValueError(f"{metric}: {len(values_a)} seeds of {a} against {len(values_b)} of {b}")
    diffs = tuple(float(x) - float(y) for x, y in zip(values_a, values_b, strict=True))
    return Paired(a, b, metric, diffs, unit, margin)
