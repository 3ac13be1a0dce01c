"""Learning-rate schedules and iterate averaging (lrlab/core/schedules.py, lrlab/core/averaging.py).

The factors are checked against their closed forms; then a hand-written loop (the seed's minibatch SGD with the
step's lr, and a float64 running mean of the iterates) is the reference that every engine and the vectorized
launcher must equal. Tolerance: equality, bit for bit (the float32 steps are the same operations; only Adam's
compiled arithmetic differs from torch's, by round-off, and it is not used here).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from lrlab.core.batched import train_together
from lrlab.core.config import AveragingConfig, AveragingName, Config, ConfigError, ScheduleConfig, ScheduleName
from lrlab.core.pipeline import generate_dataset, init_model_params, read_dataset, run_pipeline
from lrlab.core.schedules import averaging_start, factors

MakeCfg = Callable[..., Config]


def all_factors(schedule: ScheduleConfig, steps_per_epoch: int, num_epochs: int) -> list[float]:
    epochs = [factors(schedule, steps_per_epoch, num_epochs, e) for e in range(1, num_epochs + 1)]
    return np.concatenate(epochs).tolist()


def test_each_schedule_is_its_closed_form() -> None:
    per_epoch, epochs = 4, 3  # T = 12 steps
    constant = all_factors(ScheduleConfig(), per_epoch, epochs)
    assert constant == [1.0] * 12
    step = all_factors(ScheduleConfig(ScheduleName.step, every=1, gamma=0.5), per_epoch, epochs)
    assert step == [1.0] * 4 + [0.5] * 4 + [0.25] * 4
    step2 = all_factors(ScheduleConfig(ScheduleName.step, every=2, gamma=0.1), per_epoch, epochs)
    assert step2 == [1.0] * 8 + [pytest.approx(0.1, rel=1e-15)] * 4
    inverse = all_factors(ScheduleConfig(ScheduleName.inverse_time, tau=4.0), per_epoch, epochs)
    assert inverse == [pytest.approx(1 / (1 + t / 4), rel=1e-15) for t in range(12)]
    assert inverse[4] == 0.5  # halved after tau steps
    cosine = all_factors(ScheduleConfig(ScheduleName.cosine), per_epoch, epochs)
    assert cosine == [pytest.approx(0.5 * (1 + math.cos(math.pi * t / 12)), abs=1e-15) for t in range(12)]


def test_a_warm_up_ramps_then_the_schedule_starts_its_own_clock() -> None:
    warm = all_factors(ScheduleConfig(ScheduleName.inverse_time, warmup=3, tau=2.0), 4, 2)
    assert warm[:3] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]
    assert warm[3:] == [pytest.approx(1 / (1 + u / 2), rel=1e-15) for u in range(5)]
    cosine = all_factors(ScheduleConfig(ScheduleName.cosine, warmup=2), 5, 2)  # cosine over the 8 steps after it
    assert cosine[2:] == [pytest.approx(0.5 * (1 + math.cos(math.pi * u / 8)), abs=1e-15) for u in range(8)]


def test_the_averaging_window() -> None:
    assert averaging_start(AveragingConfig(), 100) is None
    assert averaging_start(AveragingConfig(AveragingName.polyak), 100) == 0
    assert averaging_start(AveragingConfig(AveragingName.tail, tail=0.25), 100) == 75
    assert averaging_start(AveragingConfig(AveragingName.tail, tail=0.001), 100) == 99  # at least the last iterate


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("schedule.warmup", -1),
        ("schedule.every", 0),
        ("schedule.gamma", 1.5),
        ("schedule.tau", 0.0),
        ("averaging.tail", 0.0),
    ],
)
def test_a_bad_schedule_or_averaging_key_is_refused_by_name(make_cfg: MakeCfg, key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}={value!r} is not allowed"):
        make_cfg(f"{key}={value}")


def test_the_defaults_keep_old_identities_and_a_schedule_counts_by_the_keys_it_reads(make_cfg: MakeCfg) -> None:
    default = make_cfg().identity()
    assert "schedule" not in default and "averaging" not in default
    assert make_cfg("schedule.tau=5").identity() != default  # a key of the default schedule, set: it counts
    assert make_cfg("schedule=step", "schedule.tau=5").identity() == make_cfg("schedule=step").identity()
    assert make_cfg("averaging=polyak", "averaging.tail=0.2").identity() == make_cfg("averaging=polyak").identity()
    assert make_cfg("averaging=tail", "averaging.tail=0.2").identity() != make_cfg("averaging=tail").identity()


def hand_written(cfg: Config) -> list[tuple[float, float | None]]:
    """The seed's loop, written out: minibatch SGD on ½(ŷ−y)² with the step's lr, and the float64 running mean.

    Each epoch's (train_loss, avg_train_loss) as the pipeline evaluates them (the mean loss over the data)."""
    data = generate_dataset(cfg)
    features, labels = data.features, data.labels
    reader = read_dataset(cfg, features, labels)
    w, b = init_model_params(cfg, features.shape[1])
    w.requires_grad_(True)
    b.requires_grad_(True)
    n = len(features)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.num_epochs
    start = {"none": None, "polyak": 0, "tail": total - math.ceil(cfg.averaging.tail * total)}
    first_averaged = start[cfg.averaging.name.value]
    mean, count = torch.zeros(len(w) + 1, dtype=torch.float64), 0
    history: list[tuple[float, float | None]] = []
    t = 0
    for epoch in range(cfg.num_epochs):
        for X, y in reader():
            lr = cfg.lr * float(factors(cfg.schedule, steps_per_epoch, cfg.num_epochs, epoch + 1)[t % steps_per_epoch])
            loss = ((X @ w + b - y) ** 2 / 2).sum()
            loss.backward()
            with torch.no_grad():
                for param in (w, b):
                    assert param.grad is not None
                    param -= lr * param.grad / len(X)
                    param.grad.zero_()
            if first_averaged is not None and t >= first_averaged:
                count += 1
                mean += (torch.cat([w.detach().reshape(-1), b.detach()]).double() - mean) / count
            t += 1
        with torch.no_grad():
            train_loss = float(((features @ w + b - labels) ** 2 / 2).mean())
            avg_w, avg_b = mean[:-1].float().reshape(-1, 1), mean[-1:].float()
            avg_loss = float(((features @ avg_w + avg_b - labels) ** 2 / 2).mean()) if count else None
        history.append((train_loss, avg_loss))
    return history


CASES = [
    ("schedule=step", "schedule.gamma=0.5", "averaging=polyak"),
    ("schedule=inverse_time", "schedule.tau=30", "schedule.warmup=10", "averaging=tail", "averaging.tail=0.4"),
    ("schedule=cosine", "batch_size=7", "averaging=polyak"),
]


@pytest.mark.parametrize("overrides", CASES)
@pytest.mark.parametrize("engine", ["autograd", "compiled"])
def test_every_engine_steps_and_averages_as_the_hand_written_loop(
    make_cfg: MakeCfg, overrides: tuple[str, ...], engine: str
) -> None:
    cfg = make_cfg(*overrides, "num_epochs=3", "lr=0.05", f"engine={engine}")
    history = run_pipeline(cfg).history
    want = hand_written(cfg)
    assert [(r.train_loss, r.avg_train_loss) for r in history] == want


@pytest.mark.parametrize("engine", ["autograd", "compiled"])
def test_the_vectorized_launcher_steps_and_averages_as_each_run_alone(make_cfg: MakeCfg, engine: str) -> None:
    common = ("schedule=cosine", "schedule.warmup=20", "averaging=tail", "num_epochs=3", f"engine={engine}")
    cfgs = [make_cfg(*common, f"lr={lr}") for lr in (0.01, 0.05, 0.2)]
    for cfg, (history, _) in zip(cfgs, train_together(cfgs), strict=True):
        assert history == run_pipeline(cfg).history
        assert [(r.train_loss, r.avg_train_loss) for r in history] == hand_written(cfg)


def test_a_tail_average_logs_from_the_first_epoch_of_its_window(make_cfg: MakeCfg) -> None:
    history = run_pipeline(make_cfg("averaging=tail", "averaging.tail=0.5", "num_epochs=4")).history
    assert [r.avg_train_loss is None for r in history] == [True, True, False, False]  # steps 200..399 of 400
    assert set(history[-1].metrics()) == {
        *("train_loss", "w_error", "b_error", "excess_loss"),
        *("avg_train_loss", "avg_w_error", "avg_b_error", "avg_excess_loss"),
    }
    assert set(history[0].metrics()) == {"train_loss", "w_error", "b_error", "excess_loss"}
