"""Confidence intervals over seeds and paired comparisons, for the benchmark tables.

    mean, low, high = mean_ci([0.61, 0.60, 0.62])            # 95% Student-t interval over seeds
    test = paired_test([0.61, 0.60, 0.62], [0.59, 0.60, 0.60])   # same seeds, in the same order
    test.diff, test.low, test.high, test.p_value, test.mark      # mark: "+" a > b, "-" a < b, "" not shown

Seeds are the independent replications: each seed draws a model's initial weights and batch order, so
two models trained with the same seed on the same data are paired by seed, and the paired t-test on
the per-seed differences is the comparison (with 2 seeds it has 1 degree of freedom and is weak; the
tables say how many seeds each row has). `mark` is set only where the 95% interval of the mean
difference excludes 0 (p < 0.05, two-sided).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


def mean_ci(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean; low = high = mean for a single value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci: no values; a row of the table needs at least one finished run")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class PairedTest:
    pairs: int
    diff: float  # mean of a - b
    low: float
    high: float
    p_value: float  # two-sided paired t-test; NaN with fewer than 2 pairs or no variation

    @property
    def mark(self) -> str:
        if not self.p_value < 1.0 - LEVEL:
            return ""
        return "+" if self.diff > 0 else "-"


def paired_test(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> PairedTest:
    """a - b paired element by element (same seeds in the same order)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_test: a and b must be paired 1-D sequences, got shapes {x.shape} and {y.shape}")
    d = x - y
    mean, low, high = mean_ci(d, level) if d.size else (math.nan, math.nan, math.nan)
    if d.size < 2:
        p = math.nan
    elif np.all(d == d[0]):
        p = 0.0 if d[0] != 0 else 1.0
    else:
        p = float(stats.ttest_rel(x, y).pvalue)
    return PairedTest(int(d.size), mean, low, high, p)
