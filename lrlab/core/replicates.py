"""Seeds as replicates: the statistics of one configuration run under several seeds
(docs/sweeps.md#seeds-as-replicates). No MLflow here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation and 95% t interval of n replicate values (std and interval NaN for n < 2).

    From ``log_spread`` (``geometric``): the geometric mean, the sample std of ln(values), and the interval of
    the mean of ln(values), exponentiated."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    geometric: bool = False

    def text(self, digits: int = 3) -> str:
        """``mean ± std [low, high]`` for a table; ``mean ×/÷ exp(std) [low, high]`` when geometric."""
        if self.n == 0:
            return "–"
        if self.n == 1:
            return f"{self.mean:.{digits}g} (n=1)"
        scatter = f"×/÷ {math.exp(self.std):.2g}" if self.geometric else f"± {self.std:.2g}"
        return f"{self.mean:.{digits}g} {scatter} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


def spread(values: Sequence[float]) -> Spread:
    """The 95% t interval of the mean of ``values``, mean ± t(0.975, n−1)·s/√n. It assumes roughly normal values;
    with few seeds it is wide, as it should be."""
    n = len(values)
    if n == 0:
        return Spread(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(np.mean(values))
    if n == 1:
        return Spread(1, mean, math.nan, math.nan, math.nan)
    std = float(np.std(values, ddof=1))
    from scipy.special import stdtrit  # the t quantile; scipy is slow to import, so only here

    half = float(stdtrit(n - 1, 0.5 + LEVEL / 2)) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


def log_spread(values: Sequence[float]) -> Spread:
    """The 95% interval of a positive quantity, on the log scale: the t interval of the mean of ln(values),
    exponentiated, around the geometric mean. It stays positive (a loss or an error scatters over decades across
    seeds, where mean ± t·s/√n reaches below zero) and assumes roughly log-normal values. NaN where a value is
    not positive and finite."""
    array = np.asarray(values, dtype=np.float64)
    if not (np.isfinite(array).all() and (array > 0).all()):
        return Spread(len(array), math.nan, math.nan, math.nan, math.nan, geometric=True)
    on_log = spread(np.log(array).tolist())  # NaN stays NaN through exp: no interval for n < 2, nothing for n = 0
    with np.errstate(over="ignore"):  # a bound past float64's range is inf, not an OverflowError
        mean, low, high = (float(np.exp(v)) for v in (on_log.mean, on_log.low, on_log.high))
    return Spread(on_log.n, mean, on_log.std, low, high, geometric=True)


def per_epoch(histories: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """Mean and sample std (NaN for one replicate) at each epoch, over replicates of equal length."""
    values = np.asarray(histories, dtype=np.float64)  # (replicates, epochs)
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.full(values.shape[1], np.nan)
    return mean.tolist(), std.tolist()


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def slope_interval(xs: Sequence[float], groups: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """The log-log slope through the group means and its bootstrap 95% interval: each (seeded) resample draws, within
    every group, as many seeds as it has, with replacement, and refits the line through the resampled means."""
    slope = fit_slope(xs, [float(np.mean(g)) for g in groups])
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = np.stack(  # (resamples, groups): each group's seeds drawn again, with replacement
        [rng.choice(np.asarray(g, dtype=np.float64), size=(BOOTSTRAP_RESAMPLES, len(g))).mean(axis=1) for g in groups],
        axis=1,
    )
    x = np.log(np.asarray(xs, dtype=np.float64))
    y = np.log(means)
    x_centred = x - x.mean()
    slopes = ((y - y.mean(axis=1, keepdims=True)) @ x_centred) / (x_centred @ x_centred)
    low, high = np.percentile(slopes, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return slope, float(low), float(high)
