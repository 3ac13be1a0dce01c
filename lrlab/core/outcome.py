"""What a run came to, from its history: overflow, growing, above SGD's noise floor, at it, or bounded
(docs/record.md#outcome). Every job's run is tagged ``lrlab.outcome`` with it; summaries count and draw it.

- ``overflow``: training left the finite, bounded region (it raised ``Diverged``, or a train_loss is not finite).
- ``growing``: finite, and the excess_loss rises geometrically at the end. With W the last ``GROWTH_WINDOW`` epochs
  (all of them from ``MIN_GROWTH_EPOCHS`` on; a run with fewer epochs is never growing), all four hold:
  1. the excess_loss rises in every epoch of W (each positive and above the one before);
  2. the least-squares fit of ln(excess_loss) on the epoch over W grows by at least ``GROWTH_FACTOR`` per epoch;
  3. the last epoch's excess_loss is the run's highest (a rise from a dip below where it started is not growth);
  4. where SGD's floor ``theory_excess_loss`` is known, the last epoch's is more than ``FLOOR_FACTOR`` times it.
- ``above_floor`` / ``at_floor``: not growing, and the run's level is more than ``FLOOR_FACTOR`` times
  ``theory_excess_loss`` / within it (below it included). The level is the lower of the last epoch's excess_loss
  and the median of the last ``FLOOR_EPOCHS`` epochs': a run is above its floor when its last epoch and at least
  one other of its last three are.
- ``bounded``: neither overflow nor growing, where there is no floor to compare with (momentum, Adam, an lr at
  or past ``lr_critical_ms``, a rank-deficient fit, more features than the theory takes).

Why these thresholds. At SGD's stationary state one epoch's excess_loss scatters about as much as its mean (a
weighted chi-square over the d+1 directions), so a single epoch is a poor witness either way:

- a rise in each of W's epochs is what noise rarely gives (1 in 120 orderings of 5 exchangeable values, 1 in 6 of
  3); that it ends at the run's highest rules out a run at its floor, which started far above it (on lrlab's
  data, from w ≈ 0); where the floor is known, condition 4 rules out the rise back from a dip inside it;
- 1.2 per epoch at least doubles the excess_loss over a 5-epoch window (1.2⁴ ≈ 2.07): slower than that, a few
  epochs do not tell growth from drift;
- 3×, on the last epoch and the median of the last 3: were the excess_loss mean·χ²₃/3 per epoch (three equal
  directions, as on the default data) and the epochs independent, one epoch of a run at its floor would pass 3×
  the floor in 34 epochs, and the last epoch with another of the last three in 1 run of 590 (1 of 75 with one
  dominant direction, χ²₁). A run that is still converging is judged by its last epoch, where a mean would be its
  earliest (lr=0.03 on the default data: 0.038, 9e-5, 2e-7 over its 3 epochs, against a floor of 2.4e-7). The
  price: a run stationary at 10× its floor would be called at it in 1 run of 6 (its last epoch below 3×, χ²₃).
  Where the theory holds, a stationary run is at its floor, and one above it is still converging, which its
  last epoch shows best.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # no torch: the sweep's figures read outcomes without training anything
    from lrlab.core.engines.results import EpochResult

MIN_GROWTH_EPOCHS = 3  # a run with fewer epochs cannot be called growing
GROWTH_WINDOW = 5  # the last epochs whose excess_loss is fitted
GROWTH_FACTOR = 1.2  # least growth per epoch of the fitted excess_loss
FLOOR_EPOCHS = 3  # the last epochs whose median excess_loss is compared with the floor
FLOOR_FACTOR = 3.0  # how far above theory_excess_loss a run is still at the floor


class Outcome(StrEnum):
    """A run's outcome, worst first: the value of its tag ``lrlab.outcome``."""

    overflow = "overflow"
    growing = "growing"
    above_floor = "above_floor"
    at_floor = "at_floor"
    bounded = "bounded"


UNBOUNDED = (Outcome.overflow.value, Outcome.growing.value)  # the outcomes of a run whose loss is not bounded


@dataclass(frozen=True)
class Classified:
    """A run's outcome with the numbers it was decided on."""

    outcome: Outcome
    growth: float | None  # the fitted excess_loss growth factor per epoch over the window (None: fewer epochs)
    level: float | None  # min(last excess_loss, median of the last FLOOR_EPOCHS), None for an overflow
    floor: float | None  # theory_excess_loss, where known and positive


def growth_factor(excess_losses: Sequence[float]) -> float | None:
    """exp of the least-squares slope of ln(excess_loss) against the epoch over the last ``GROWTH_WINDOW`` epochs;
    None for fewer than ``MIN_GROWTH_EPOCHS`` epochs or a value in the window that is not positive and finite."""
    window = np.asarray(list(excess_losses)[-GROWTH_WINDOW:], dtype=np.float64)
    if len(window) < MIN_GROWTH_EPOCHS or not (np.isfinite(window).all() and (window > 0).all()):
        return None
    slope = np.polyfit(np.arange(len(window), dtype=np.float64), np.log(window), 1)[0]
    return float(math.exp(slope))


def classify(history: Sequence[EpochResult], diverged: bool, theory_excess_loss: float | None) -> Classified:
    """The outcome of a run with ``history`` (its epochs, in order), which raised ``Diverged`` if ``diverged``;
    ``theory_excess_loss`` is SGD's floor at its lr and batch size (``Reference.theory_excess_loss``), None where
    the theory has none."""
    floor = theory_excess_loss if theory_excess_loss is not None and theory_excess_loss > 0 else None
    if diverged or any(not math.isfinite(r.train_loss) for r in history):
        return Classified(Outcome.overflow, None, None, floor)
    if not history:
        raise ValueError("a run with no epochs has no outcome")
    excess = [r.excess_loss for r in history]
    growth = growth_factor(excess)
    level = min(excess[-1], float(np.median(excess[-FLOOR_EPOCHS:])))
    window = excess[-GROWTH_WINDOW:]
    rising = all(later > earlier for earlier, later in itertools.pairwise(window))
    highest = window[-1] >= max(excess)
    above = floor is None or window[-1] > FLOOR_FACTOR * floor
    if growth is not None and growth >= GROWTH_FACTOR and rising and highest and above:
        return Classified(Outcome.growing, growth, level, floor)
    if floor is None:
        return Classified(Outcome.bounded, growth, level, floor)
    at = level <= FLOOR_FACTOR * floor  # a NaN level (no OLS reference) is not at the floor
    return Classified(Outcome.at_floor if at else Outcome.above_floor, growth, level, floor)
