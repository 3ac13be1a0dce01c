"""The ``autograd`` engine (default): the seed's training loop, one minibatch a step (the step-4 model's forward pass,
the step-5 losses, the step-6 update), on every device."""

from __future__ import annotations

import math
import time

from lrlab.core.averaging import Average
from lrlab.core.engines.results import EpochResult, Problem, Stopped, TrainResult, end_epoch, train_result
from lrlab.core.progress import bar
from lrlab.core.schedules import averaging_start, factors

PROGRESS_BAR_MIN_BATCHES = 2000  # epochs with at least this many minibatches get a progress bar


def train(problem: Problem) -> TrainResult:
    cfg, net, loss, optimizer = problem.cfg, problem.net, problem.loss, problem.optimizer
    features = problem.features
    num_batches = math.ceil(len(features) / cfg.batch_size)
    average = Average(net, averaging_start(cfg.averaging, num_batches * cfg.num_epochs))
    history: list[EpochResult] = []
    start = time.perf_counter()
    for epoch in range(1, cfg.num_epochs + 1):
        lrs = (cfg.lr * factors(cfg.schedule, num_batches, cfg.num_epochs, epoch)).tolist()  # float64, one a step
        first_step = (epoch - 1) * num_batches
        enabled = num_batches >= PROGRESS_BAR_MIN_BATCHES
        with bar(num_batches, f"epoch {epoch}", "batch", enabled=enabled, iterable=problem.reader()) as batches:
            for step, (X, y) in enumerate(batches):
                if problem.should_stop():
                    raise Stopped(epoch, history)
                optimizer.set_lr(lrs[step])
                optimizer.update(loss(net(X), y))  # X和y的小批量损失 -> one update
                average.add(first_step + step, net)
        end_epoch(problem, epoch, history, averaged=average.averaged())
    return train_result(problem, history, time.perf_counter() - start)
