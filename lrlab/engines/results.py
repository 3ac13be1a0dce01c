"""What every engine reports, and the end of an epoch.

At the end of each epoch an engine hands its model (the step-4 module, holding the current ``w`` and ``b``)
to ``end_epoch``, which evaluates the step-5 loss on the whole training set with torch, reports the
``EpochResult`` and raises ``Diverged``: equal parameters give equal histories. The compiled engine
evaluates the same quantities in a kernel (``compiled.evaluation``, passed to ``end_epoch``): with torch's
arithmetic where it can, within float32 round-off for a wide model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lrlab.config import Config
from lrlab.losses import Loss
from lrlab.models import LinReg
from lrlab.theory import Reference


@dataclass
class EpochResult:
    epoch: int  # 1-based, the MLflow step
    train_loss: float  # mean loss over the whole training set after the epoch, as the seed prints it
    w_error: float  # ‖w − true_w‖₂
    b_error: float  # |b − true_b|
    excess_loss: float  # train_loss − the least-squares fit's loss on the same data


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


def never() -> bool:
    return False


Evaluated = tuple[float, float, float, bool]  # train_loss, w_error, b_error, whether w and b are finite
Evaluate = Callable[[LinReg], Evaluated]  # an engine's own evaluation of a model (compiled.evaluation)


def end_epoch(
    cfg: Config,
    epoch: int,
    net: LinReg,
    loss: Loss,
    features: torch.Tensor,
    labels: torch.Tensor,
    ref: Reference,
    history: list[EpochResult],
    on_epoch: Callable[[EpochResult], None],
    evaluate: Evaluate | None = None,
) -> None:
    """Evaluate ``net`` after ``epoch`` (with torch, or with ``evaluate``, an engine's evaluation of the same
    quantities), append and report the result; raise ``Diverged`` if it left the bounds."""
    train_loss, w_error, b_error, finite = evaluate(net) if evaluate else _evaluate(cfg, net, loss, features, labels)
    result = EpochResult(epoch, train_loss, w_error, b_error, train_loss - ref.ols_train_loss)
    history.append(result)
    on_epoch(result)
    reason = _divergence(result, finite, cfg.divergence_threshold)
    if reason:
        raise Diverged(epoch, reason, history)


def _evaluate(cfg: Config, net: LinReg, loss: Loss, features: torch.Tensor, labels: torch.Tensor) -> Evaluated:
    """The mean step-5 loss over the training set, ‖w − true_w‖₂, |b − true_b| and whether w and b are finite."""
    with torch.no_grad():
        true_w = torch.tensor(cfg.dataset.true_w, dtype=features.dtype, device=features.device)
        train_loss = float(loss(net(features), labels).mean())
        w, b = net.estimates()
        w_error = float(torch.linalg.vector_norm(w - true_w))
        b_error = float((b - cfg.dataset.true_b).abs())
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


def train_result(
    cfg: Config, net: LinReg, history: list[EpochResult], seconds: float, features: torch.Tensor
) -> TrainResult:
    """The result of a run that trained every epoch in ``seconds``."""
    w, b = net.estimates()
    return TrainResult(
        history=history,
        w=w.cpu().tolist(),
        b=float(b),
        train_seconds=seconds,
        samples_per_second=cfg.num_epochs * len(features) / seconds,
        device=str(features.device),
    )
