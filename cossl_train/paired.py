"""Two methods compared seed by seed: per-seed differences, their mean ± std, how many are
positive, the smallest difference the seeds can resolve, and one sentence saying which way it falls.

The resolvable difference is the half-width of the 95 % confidence interval of the mean paired
difference, t(0.975, n - 1) * sd / sqrt(n): a mean difference inside it is not told apart from 0
by these seeds. With one seed nothing is resolved (``resolvable`` is inf).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds: the one formula behind
    every ``mean ± std`` of the package. Values that are None are left out; (NaN, NaN) when none
    is left, and a NaN std when one is not finite."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return math.nan, math.nan
    if len(vals) == 1:
        return vals[0], 0.0
    # statistics.stdev is exact (fractions) but cannot take NaN or infinities
    std = statistics.stdev(vals) if all(map(math.isfinite, vals)) else math.nan
    return statistics.fmean(vals), std


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

    def summary(self, digits: int = 2) -> str:
        """``-0.90 ± 7.10 (1/3 > 0; resolves ±17.6)``."""
        res = "∞" if math.isinf(self.resolvable) else f"{self.resolvable:.{digits}f}"
        return (f"{self.mean:+.{digits}f} ± {self.std:.{digits}f}{self.unit} ({self.positive}/{self.n} > 0; "
                f"resolves ±{res}{self.unit})")

    def sentence(self, digits: int = 2) -> str:
        """Which way the difference falls, plainly, whatever its sign."""
        d = f"{abs(self.mean):.{digits}f}{self.unit}"
        where = f"{self.metric}: {self.a} - {self.b} = {self.summary(digits)}"
        if self.n < 2:
            return f"{where}: one seed, so no difference can be resolved."
        if not self.resolved:
            return (f"{where}: inside the seeds' spread; {self.n} seeds resolve only differences beyond "
                    f"±{self.resolvable:.{digits}f}{self.unit}, so neither is ahead here.")
        side = "higher" if self.mean > 0 else "lower"
        return f"{where}: {self.a} is {side} by {d}, beyond what the seeds' spread explains."


def paired(a: str, b: str, metric: str, values_a: Sequence[float], values_b: Sequence[float],
           unit: str = "") -> Paired:
    """Pair ``values_a`` and ``values_b`` by position (the same seeds, in the same order)."""
    if len(values_a) != len(values_b):
        raise ValueError(f"{metric}: {len(values_a)} seeds of {a} against {len(values_b)} of {b}")
    return Paired(a, b, metric, tuple(float(x) - float(y) for x, y in zip(values_a, values_b, strict=True)), unit)
