"""Mean and spread over seeds: the one formula behind every ``mean ± std`` of the package."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the values that are not None;
    (NaN, NaN) when none is left, and a NaN std when one is not finite."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return math.nan, math.nan
    if len(vals) == 1:
        return vals[0], 0.0
    # statistics.stdev is exact (fractions) but cannot take NaN or infinities
    std = statistics.stdev(vals) if all(map(math.isfinite, vals)) else math.nan
    return statistics.fmean(vals), std
