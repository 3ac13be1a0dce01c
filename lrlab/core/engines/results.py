"""What every engine reports, and the end of an epoch: ``end_epoch`` evaluates the model with torch (or with an
engine's kernel for the same quantities, ``compiled.evaluation``), reports the ``EpochResult`` and raises
``Diverged``, so that equal parameters give equal histories whatever the engine."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lrlab.core.config import Config
from lrlab.core.data import Reader
from lrlab.core.losses import Loss
from lrlab.core.metrics import AVERAGED_METRICS, EPOCH_METRICS
from lrlab.core.models import LinReg
from lrlab.core.optim import Update
from lrlab.core.theory import Reference


@dataclass
class Problem:
    """What step 7 trains: the products of steps 1-6, and where each epoch goes. An engine gets only this."""

    cfg: Config
    net: LinReg  # step 4, holding the current w and b
    loss: Loss  # step 5
    optimizer: Update  # step 6
    reader: Reader  # step 2
    features: torch.Tensor  # (n, d), on the run's device
    labels: torch.Tensor  # (n, 1)
    ref: Reference  # the closed-form references (theory.reference)
    on_epoch: Callable[[EpochResult], None] = lambda _: None
    should_stop: Callable[[], bool] = lambda: False  # asked before every step (or kernel call)


@dataclass
class EpochResult:
    epoch: int  # 1-based, the MLflow step
    train_loss: float  # mean loss over the whole training set after the epoch, as the seed prints it
    w_error: float  # ‖w − true_w‖₂, or ‖w − w_ols‖₂ on a table (``Reference.against``)
    b_error: float  # |b − true_b|, or |b − b_ols|
    excess_loss: float  # train_loss − the least-squares fit's loss on the same data
    # The averaged model's (``averaging``), once it averages an iterate; None otherwise.
    avg_train_loss: float | None = None
    avg_w_error: float | None = None
    avg_b_error: float | None = None
    avg_excess_loss: float | None = None

    def metrics(self) -> dict[str, float]:
        """The epoch's metrics by name: ``EPOCH_METRICS``, and ``AVERAGED_METRICS`` where there are any."""
        names = EPOCH_METRICS + (AVERAGED_METRICS if self.avg_train_loss is not None else ())
        return {name: getattr(self, name) for name in names}


@dataclass
class TrainResult:
    history: list[EpochResult]
    w: list[float]
    b: float
    train_seconds: float  # wall time of step 7 (updates and per-epoch evaluation)
    samples_per_second: float  # examples consumed by updates per second of train_seconds
    device: str = ""


class Diverged(RuntimeError):
    """Training left the finite, bounded region: an outcome of a large lr, not a bug."""

    def __init__(self, epoch: int, reason: str, history: list[EpochResult]) -> None:
        super().__init__(f"diverged at epoch {epoch}: {reason}")
        self.epoch, self.reason, self.history = epoch, reason, history


class Stopped(RuntimeError):
    """A stop was asked for (Ctrl-C, SIGTERM) during training."""

    def __init__(self, epoch: int, history: list[EpochResult]) -> None:
        super().__init__(f"stopped during epoch {epoch}")
        self.epoch, self.history = epoch, history


Evaluated = tuple[float, float, float, bool]  # train_loss, w_error, b_error, whether w and b are finite
Evaluate = Callable[[LinReg], Evaluated]  # an engine's own evaluation of a model (compiled.evaluation)


def end_epoch(
    problem: Problem,
    epoch: int,
    history: list[EpochResult],
    evaluate: Evaluate | None = None,
    averaged: LinReg | None = None,
) -> None:
    """Evaluate the model after ``epoch`` (with torch, or with ``evaluate``, an engine's evaluation of the same
    quantities), and the ``averaged`` model if there is one; append and report the result; raise ``Diverged``
    if the model left the bounds."""
    measure = evaluate or (lambda net: _evaluate(problem, net))
    train_loss, w_error, b_error, finite = measure(problem.net)
    floor = problem.ref.ols_train_loss
    result = EpochResult(epoch, train_loss, w_error, b_error, train_loss - floor)
    if averaged is not None:
        avg_loss, result.avg_w_error, result.avg_b_error, _ = measure(averaged)
        result.avg_train_loss, result.avg_excess_loss = avg_loss, avg_loss - floor
    history.append(result)
    problem.on_epoch(result)
    reason = _divergence(result, finite, problem.cfg.divergence_threshold)
    if reason:
        raise Diverged(epoch, reason, history)


def _evaluate(problem: Problem, net: LinReg) -> Evaluated:
    """The mean step-5 loss of ``net`` over the training set, ‖w − w*‖₂, |b − b*| and whether w and b are finite;
    (w*, b*) is what errors are measured against (``Reference.against``: the true parameters, or the OLS fit)."""
    against, features, labels = problem.ref.against, problem.features, problem.labels
    with torch.no_grad():
        w_against = torch.tensor(against.w, dtype=features.dtype, device=features.device)
        train_loss = float(problem.loss(net(features), labels).mean())
        w, b = net.estimates()
        w_error = float(torch.linalg.vector_norm(w - w_against))
        b_error = float((b - against.b).abs())
        finite = bool(torch.isfinite(w).all() and torch.isfinite(b).all())
    return train_loss, w_error, b_error, finite


def _divergence(result: EpochResult, finite: bool, threshold: float) -> str:
    if not math.isfinite(result.train_loss):
        return f"train_loss is {result.train_loss}"
    if result.train_loss > threshold:
        return f"train_loss {result.train_loss:.3g} > divergence_threshold {threshold:.3g}"
    if not finite:
        return "a parameter is not finite"
    return ""


def train_result(problem: Problem, history: list[EpochResult], seconds: float) -> TrainResult:
    """The result of a run that trained every epoch in ``seconds``."""
    cfg, features = problem.cfg, problem.features
    w, b = problem.net.estimates()
    return TrainResult(
        history=history,
        w=w.cpu().tolist(),
        b=float(b),
        train_seconds=seconds,
        samples_per_second=cfg.num_epochs * len(features) / seconds,
        device=str(features.device),
    )
