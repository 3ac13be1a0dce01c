"""The learning rate at each step (``schedule``) and which iterates the averaged model holds (``averaging``).

Step t counts the updates from 0 over the whole training, ``steps_per_epoch`` = ceil(n / batch_size) an epoch.
Both engines and the vectorized launcher read these, so that every one steps with the same float64 lr:
``cfg.lr * factor``, rounded by each update rule as it rounds a constant lr.
"""

from __future__ import annotations

import math
from typing import assert_never

import numpy as np

from lrlab.core.config import AveragingConfig, AveragingName, ScheduleConfig, ScheduleName


def factors(schedule: ScheduleConfig, steps_per_epoch: int, num_epochs: int, epoch: int) -> np.ndarray:
    """The lr's factor at each step of ``epoch`` (1-based), (steps_per_epoch,) float64."""
    t = np.arange((epoch - 1) * steps_per_epoch, epoch * steps_per_epoch, dtype=np.float64)
    warmup = schedule.warmup
    ramp = np.minimum(1.0, (t + 1) / warmup) if warmup else np.ones_like(t)
    u = np.maximum(0.0, t - warmup)  # the schedule's own steps, from the warm-up's end
    match schedule.name:
        case ScheduleName.constant:
            decay = np.ones_like(u)
        case ScheduleName.step:
            decay = schedule.gamma ** np.floor(u / (schedule.every * steps_per_epoch))
        case ScheduleName.inverse_time:
            decay = 1.0 / (1.0 + u / schedule.tau)
        case ScheduleName.cosine:
            span = num_epochs * steps_per_epoch - warmup
            decay = 0.5 * (1.0 + np.cos(math.pi * u / span)) if span > 0 else np.ones_like(u)
        case _:
            assert_never(schedule.name)
    return ramp * decay


def averaging_start(averaging: AveragingConfig, total_steps: int) -> int | None:
    """The first step whose iterate (the parameters after it) the averaged model holds; None: no averaging."""
    match averaging.name:
        case AveragingName.none:
            return None
        case AveragingName.polyak:
            return 0
        case AveragingName.tail:
            return total_steps - max(1, math.ceil(averaging.tail * total_steps))
        case _:
            assert_never(averaging.name)
