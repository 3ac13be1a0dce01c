"""A run's outcome from its history (lrlab/core/outcome.py): overflow, growing, above_floor, at_floor, bounded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrlab.core.engines.results import EpochResult
from lrlab.core.outcome import (
    GROWTH_FACTOR,
    MIN_GROWTH_EPOCHS,
    Outcome,
    classify,
    growth_factor,
)

OLS = 5e-5  # the least-squares loss these histories sit above (train_loss = OLS + excess_loss)


def history(excess: list[float], train_loss: list[float] | None = None) -> list[EpochResult]:
    losses = train_loss or [OLS + e for e in excess]
    return [EpochResult(i + 1, loss, 0.1, 0.1, e) for i, (loss, e) in enumerate(zip(losses, excess, strict=True))]


def geometric(start: float, rate: float, epochs: int) -> list[float]:
    return [start * rate**k for k in range(epochs)]


def test_the_tag_values() -> None:
    assert [o.value for o in Outcome] == ["overflow", "growing", "above_floor", "at_floor", "bounded"]
    assert f"{Outcome.growing}" == "growing"  # what the tag stores


@pytest.mark.parametrize("rate", [1.25, 2.0, 10.0])
@pytest.mark.parametrize("start", [1e-3, 1.0, 100.0])
def test_geometric_growth_is_growing_at_its_rate(rate: float, start: float) -> None:
    excess = geometric(start, rate, 8)
    got = classify(history(excess), False, None)
    assert got.outcome is Outcome.growing
    assert got.growth == pytest.approx(rate, rel=1e-9)  # the fit of an exact geometric sequence is its rate
    # With SGD's floor known and far below, still growing; the floor is reported.
    floored = classify(history(excess), False, start * 1e-3)
    assert floored.outcome is Outcome.growing and floored.floor == start * 1e-3


def test_growth_below_the_bound_is_not_growing() -> None:
    excess = geometric(1.0, 1.1, 8)  # 1.1 < GROWTH_FACTOR: a drift, not growth
    assert GROWTH_FACTOR > 1.1
    assert classify(history(excess), False, None).outcome is Outcome.bounded
    assert classify(history(excess), False, 1e-6).outcome is Outcome.above_floor


def test_growth_after_a_transient_counts_once_past_where_the_run_started() -> None:
    # From w ≈ 0 the excess starts high (15 on the default data); a rise from a dip is growth only once the
    # run is at its highest.
    decay = [15.0, 1.5, 0.15]
    assert classify(history([*decay, 1.0, 3.0, 9.0]), False, None).outcome is Outcome.bounded
    assert classify(history([*decay, 1.0, 3.0, 9.0, 27.0]), False, None).outcome is Outcome.growing


def test_a_rise_that_pauses_is_not_growing() -> None:
    # lr=1.84 at batch_size=10 on the default data (seed 0): heavy-tailed jumps, not a geometric rise in every epoch.
    excess = [7.22e3, 1.74e3, 182, 13.6, 1.01e4, 1.45e9]
    got = classify(history(excess), False, None)
    assert got.outcome is Outcome.bounded and got.growth is not None and got.growth > 20


def test_short_runs_are_never_growing() -> None:
    assert MIN_GROWTH_EPOCHS == 3
    for excess in ([1.0], [1.0, 100.0]):
        got = classify(history(excess), False, None)
        assert got.outcome is Outcome.bounded and got.growth is None
        assert growth_factor(excess) is None
    assert classify(history([1.0, 100.0]), False, 1e-6).outcome is Outcome.above_floor
    assert classify(history([1.0, 2.0, 4.0]), False, None).outcome is Outcome.growing  # three are enough


def test_overflow_is_what_raised_diverged_or_is_not_finite() -> None:
    assert classify(history([1.0, 0.1]), True, 1e-3).outcome is Outcome.overflow
    assert classify([], True, None).outcome is Outcome.overflow  # no epoch needed
    for bad in (math.inf, math.nan):
        assert classify(history([1.0, bad], [1.0, bad]), False, None).outcome is Outcome.overflow
    with pytest.raises(ValueError, match="no epochs"):
        classify([], False, None)


def test_above_the_floor_takes_the_last_epoch_and_another_of_the_last_three() -> None:
    floor = 1e-6
    assert classify(history([10.0, 1.0, 2.9e-6, 3.0e-6, 3.1e-6]), False, floor).outcome is Outcome.at_floor
    got = classify(history([10.0, 1.0, 2.9e-6, 3.1e-6, 3.3e-6]), False, floor)  # median 3.1e-6 > 3e-6
    assert got.outcome is Outcome.above_floor and got.level == pytest.approx(3.1e-6)
    # One epoch far out, the last or another, does not move a run off its floor.
    assert classify(history([10.0, 1e-7, 1e-7, 7e-6]), False, floor).outcome is Outcome.at_floor
    assert classify(history([10.0, 1e-7, 7e-6, 1e-7]), False, floor).outcome is Outcome.at_floor
    assert classify(history([10.0, 7e-6, 1e-7, 7e-6]), False, floor).outcome is Outcome.above_floor
    # Below the floor (or below the OLS fit, by float round-off) is at it; no floor (momentum, Adam) is bounded.
    assert classify(history([1e-2, 1e-9, -6e-11, -6e-11]), False, floor).outcome is Outcome.at_floor
    assert classify(history([1e-2, 1e-9, -6e-11, -6e-11]), False, None).outcome is Outcome.bounded
    assert classify(history([10.0, 5.0, 2.5]), False, 0.0).outcome is Outcome.bounded  # a floor of 0 is none


def test_a_run_that_just_reached_its_floor_is_at_it() -> None:
    # The default run (lr=0.03, 3 epochs, seed 0): the mean of its 3 epochs is its first epoch's; its last is at
    # the floor. Above the floor takes both the last epoch and the mean of the last three.
    excess = [0.0379, 9.33e-05, 2.15e-07]
    got = classify(history(excess), False, 2.43e-7)
    assert got.outcome is Outcome.at_floor and got.level == 2.15e-07
    assert classify(history([0.0379, 9.33e-05, 1e-6]), False, 2.43e-7).outcome is Outcome.above_floor


def test_a_rise_back_from_a_dip_inside_the_floor_is_at_the_floor() -> None:
    # lr=0.03 on the default data (seed 0), 6 epochs: the last three rise ×25 and ×2, all inside the noise floor.
    excess = [0.0379, 9.33e-05, 2.15e-07, 8.72e-09, 1.03e-07, 2.14e-07]
    got = classify(history(excess), False, 2.43e-7)
    assert got.outcome is Outcome.at_floor


def stationary(rng: np.random.Generator, floor: float, epochs: int) -> list[float]:
    """A run from w ≈ 0 that reaches its floor: a decaying transient plus floor·χ²₃/3 per epoch."""
    noise = floor * rng.chisquare(3, size=epochs) / 3
    return [15.0 * 0.01**k + n for k, n in enumerate(noise)]


def test_noisy_runs_at_their_floor_are_called_at_floor_and_never_growing() -> None:
    rng = np.random.default_rng(0)
    floor, runs = 1e-6, 2000
    counted = {o: 0 for o in Outcome}
    unknown = {o: 0 for o in Outcome}
    for _ in range(runs):
        excess = stationary(rng, floor, 20)
        counted[classify(history(excess), False, floor).outcome] += 1
        unknown[classify(history(excess), False, None).outcome] += 1
    assert counted[Outcome.growing] == 0 and unknown[Outcome.growing] == 0
    assert unknown[Outcome.bounded] == runs
    # P(the last and another of the last three of independent χ²₃/3 > 3) = 1/590: a handful of 2000 at most
    assert counted[Outcome.above_floor] <= 10 and counted[Outcome.at_floor] >= runs - 10


def test_noisy_runs_far_above_their_floor_are_above_it() -> None:
    rng = np.random.default_rng(1)
    called = [classify(history(stationary(rng, 100e-6, 20)), False, 1e-6) for _ in range(2000)]
    above = sum(c.outcome is Outcome.above_floor for c in called)
    assert above + sum(c.outcome is Outcome.at_floor for c in called) == 2000
    # 100× the floor: a last epoch below 3× the floor (χ²₃ < 0.09) in 1 run of 150, about 13 of 2000
    assert above >= 2000 - 30
