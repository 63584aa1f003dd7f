"""The Student t interval over a list of values, shared by the report and the instruments.

It lives below both (the estimator validation of :mod:`harness.instruments` draws intervals, as the
report's tables and claims do), so that no instrument imports the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float, int]:
    """(mean, sd, low, high, n) with a Student t interval over ``values`` (finite ones); NaN bounds when n < 2."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return (math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return (mean, math.nan, math.nan, math.nan, n)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, sd, mean - half, mean + half, n)
