"""Summary statistics reported by every evaluation: mean and 95% confidence half-width."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% interval, 1.96 * s / sqrt(n).

    ``s`` is the sample standard deviation (ddof=1); one value gives a half-width of 0. Values
    with inf or NaN (a diverged adaptation) give NaN or inf figures silently.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if x.size == 1:
        return float(x[0]), 0.0
    with np.errstate(invalid="ignore", over="ignore"):  # a diverged value gives inf / NaN, not a warning
        return float(x.mean()), float(1.96 * x.std(ddof=1) / math.sqrt(x.size))
