"""The ``autograd`` engine (default): the seed's training loop, one minibatch a step.

For each minibatch: the step-4 model's forward pass, the step-5 per-example losses, and the step-6 update
(``backward()`` and the seed's ``sgd``, or a ``torch.optim`` step). Runs on every device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from lrlab.config import Config
from lrlab.data import Reader
from lrlab.engines.results import EpochResult, Stopped, TrainResult, end_epoch, never, train_result
from lrlab.losses import Loss
from lrlab.models import LinReg
from lrlab.optim import Update
from lrlab.theory import Reference

PROGRESS_BAR_MIN_BATCHES = 2000  # epochs with at least this many minibatches get a progress bar


def train(
    cfg: Config,
    net: LinReg,
    loss: Loss,
    optimizer: Update,
    reader: Reader,
    features: torch.Tensor,
    labels: torch.Tensor,
    ref: Reference,
    on_epoch: Callable[[EpochResult], None],
    should_stop: Callable[[], bool] = never,
) -> TrainResult:
    num_batches = math.ceil(len(features) / cfg.batch_size)
    history: list[EpochResult] = []
    start = time.perf_counter()
    for epoch in range(1, cfg.num_epochs + 1):
        batches = tqdm(
            reader(),
            total=num_batches,
            desc=f"epoch {epoch}",
            leave=False,
            disable=None if num_batches >= PROGRESS_BAR_MIN_BATCHES else True,
        )
        for X, y in batches:
            if should_stop():
                raise Stopped(epoch, history)
            optimizer.update(loss(net(X), y))  # X和y的小批量损失 -> one update
        end_epoch(cfg, epoch, net, loss, features, labels, ref, history, on_epoch)
    return train_result(cfg, net, history, time.perf_counter() - start, features)
