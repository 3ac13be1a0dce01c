"""The seed's seven steps, in order, on one screen. Knows nothing of Hydra or MLflow.

    1 生成数据集 generate_dataset     2 读取数据集 read_dataset     3 初始化模型参数 init_model_params
    4 定义模型 define_model           5 定义损失函数 define_loss     6 定义优化算法 define_optimizer
    7 训练 train

``run_pipeline(cfg)`` calls them top to bottom. Each epoch's result goes to ``on_epoch`` (the caller
prints and records it); a loss or parameter that is non-finite or past ``cfg.divergence_threshold`` raises
``Diverged`` at the end of that epoch at the latest. ``should_stop`` is asked before every step; when it
answers yes, training raises ``Stopped`` with the epochs completed so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from lrlab.config import Config
from lrlab.data import READERS, Reader, synthetic_data
from lrlab.losses import LOSSES, Loss
from lrlab.models import MODELS, LinReg, init_params
from lrlab.optim import Update, make_update
from lrlab.theory import Reference, reference

PROGRESS_BAR_MIN_BATCHES = 2000  # epochs with at least this many minibatches get a progress bar


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


# 1 生成数据集
def generate_dataset(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(cfg.stream_seed("data"))
    true_w = torch.tensor(cfg.dataset.true_w, dtype=torch.float32)
    return synthetic_data(true_w, cfg.dataset.true_b, cfg.dataset.num_examples, cfg.dataset.noise_std, generator)


# 2 读取数据集
def read_dataset(cfg: Config, features: torch.Tensor, labels: torch.Tensor) -> Reader:
    return READERS[cfg.reader.name.value](features, labels, cfg.batch_size, cfg.stream_seed("shuffle"))


# 3 初始化模型参数
def init_model_params(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(cfg.stream_seed("init"))
    return init_params(len(cfg.dataset.true_w), cfg.model.init_std, generator)


# 4 定义模型
def define_model(cfg: Config, w: torch.Tensor, b: torch.Tensor, device: torch.device) -> LinReg:
    return MODELS[cfg.model.name.value](w, b).to(device)


# 5 定义损失函数
def define_loss(cfg: Config) -> Loss:
    return LOSSES[cfg.loss.name.value]


# 6 定义优化算法
def define_optimizer(cfg: Config, net: LinReg) -> Update:
    return make_update(cfg.optimizer, net.parameters(), cfg.lr)


# 7 训练
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
    true_w = torch.tensor(cfg.dataset.true_w, dtype=features.dtype, device=features.device)
    num_examples = len(features)
    num_batches = math.ceil(num_examples / cfg.batch_size)
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
        with torch.no_grad():
            train_loss = float(loss(net(features), labels).mean())
            w, b = net.estimates()
            result = EpochResult(
                epoch=epoch,
                train_loss=train_loss,
                w_error=float(torch.linalg.vector_norm(w - true_w)),
                b_error=float((b - cfg.dataset.true_b).abs()),
                excess_loss=train_loss - ref.ols_train_loss,
            )
        history.append(result)
        on_epoch(result)
        reason = _divergence(result, w, b, cfg.divergence_threshold)
        if reason:
            raise Diverged(epoch, reason, history)
    seconds = time.perf_counter() - start
    w, b = net.estimates()
    return TrainResult(
        history=history,
        w=w.cpu().tolist(),
        b=float(b),
        train_seconds=seconds,
        samples_per_second=cfg.num_epochs * num_examples / seconds,
        device=str(features.device),
    )


def _divergence(result: EpochResult, w: torch.Tensor, b: torch.Tensor, threshold: float) -> str:
    if not math.isfinite(result.train_loss):
        return f"train_loss is {result.train_loss}"
    if result.train_loss > threshold:
        return f"train_loss {result.train_loss:.3g} > divergence_threshold {threshold:.3g}"
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        return "a parameter is not finite"
    return ""


def run_pipeline(
    cfg: Config,
    on_epoch: Callable[[EpochResult], None] = lambda _: None,
    on_reference: Callable[[Reference], None] = lambda _: None,
    should_stop: Callable[[], bool] = never,
) -> TrainResult:
    """The seven steps, top to bottom. ``on_reference`` gets the closed-form references before training."""
    device = cfg.device.resolve()
    features, labels = generate_dataset(cfg)  # 1: (n, d), (n, 1), on the CPU so every device sees the same data
    ref = reference(features, labels, cfg.dataset.true_w, cfg.dataset.true_b, cfg.loss.name.value, cfg.lr)
    on_reference(ref)
    features, labels = features.to(device), labels.to(device)
    reader = read_dataset(cfg, features, labels)  # 2
    w, b = init_model_params(cfg)  # 3: (d, 1), (1,)
    net = define_model(cfg, w, b, device)  # 4
    loss = define_loss(cfg)  # 5
    optimizer = define_optimizer(cfg, net)  # 6
    return train(cfg, net, loss, optimizer, reader, features, labels, ref, on_epoch, should_stop)  # 7
