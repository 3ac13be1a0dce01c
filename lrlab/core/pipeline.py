"""The seed's seven steps, in order, on one screen. Knows nothing of Hydra or MLflow.

    1 生成数据集 generate_dataset     2 读取数据集 read_dataset     3 初始化模型参数 init_model_params
    4 定义模型 define_model           5 定义损失函数 define_loss     6 定义优化算法 define_optimizer
    7 训练 train

``run_pipeline(cfg)`` calls them top to bottom; step 7 runs in the configured engine (``lrlab/core/engines``).
Each epoch's result goes to ``on_epoch`` (the caller prints and records it); a loss or parameter that is
non-finite or past ``cfg.divergence_threshold`` raises ``Diverged`` at the end of that epoch at the latest.
``should_stop`` is asked before every step (the compiled engine: before every kernel call of at most an
epoch); when it answers yes, training raises ``Stopped`` with the epochs completed so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from lrlab.core import engines
from lrlab.core.config import Config, OptimizerName, ScheduleName
from lrlab.core.data import READERS, Dataset, Reader, synthetic_data, table_data
from lrlab.core.engines.results import Diverged, EpochResult, Problem, Stopped, TrainResult
from lrlab.core.losses import LOSSES, Loss
from lrlab.core.models import MODELS, LinReg, init_params
from lrlab.core.optim import Update, make_update
from lrlab.core.theory import Reference, reference

__all__ = [
    "Dataset",
    "Diverged",
    "EpochResult",
    "Problem",
    "Stopped",
    "TrainResult",
    "closed_form",
    "define_loss",
    "define_model",
    "define_optimizer",
    "generate_dataset",
    "init_model_params",
    "plain_sgd",
    "read_dataset",
    "run_pipeline",
    "train",
]


# 1 生成数据集
def generate_dataset(cfg: Config) -> Dataset:
    """Synthetic data y = X·true_w + true_b + noise, with its true parameters; or the table at ``dataset.path``."""
    spec = cfg.dataset
    if spec.path is not None:
        return table_data(spec.table())  # the user's rows: no true parameters
    true_w, true_b, num_examples, noise_std = spec.true_w, spec.true_b, spec.num_examples, spec.noise_std
    assert true_w is not None and true_b is not None and num_examples is not None and noise_std is not None
    generator = torch.Generator().manual_seed(cfg.stream_seed("data"))
    w = torch.tensor(true_w, dtype=torch.float32)
    features, labels = synthetic_data(w, true_b, num_examples, noise_std, generator)
    return Dataset(features, labels, tuple(true_w), true_b)


# 2 读取数据集
def read_dataset(cfg: Config, features: torch.Tensor, labels: torch.Tensor) -> Reader:
    return READERS[cfg.reader.name.value](features, labels, cfg.batch_size, cfg.stream_seed("shuffle"))


# 3 初始化模型参数
def init_model_params(cfg: Config, num_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(cfg.stream_seed("init"))
    return init_params(num_features, cfg.model.init_std, generator)


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
def train(problem: Problem) -> TrainResult:
    """The training loop, run by the configured engine (``lrlab/core/engines``): ``autograd`` is the seed's loop
    over the modules of steps 4-6; ``compiled`` runs the same update as a numba kernel."""
    return engines.load(problem.cfg.engine.name)(problem)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for a run; the process's own number comes back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def plain_sgd(cfg: Config) -> bool:
    """Whether ``cfg`` steps by plain minibatch SGD (sgd_scratch, or sgd without momentum) with a constant lr
    (after any warm-up): the runs that ``theory.SgdTheory`` describes."""
    name = cfg.optimizer.name
    plain = name is OptimizerName.sgd_scratch or (name is OptimizerName.sgd and cfg.optimizer.momentum == 0)
    return plain and cfg.schedule.name is ScheduleName.constant


def closed_form(cfg: Config, data: Dataset) -> Reference:
    """The run's closed-form references (``theory.reference``); SGD's edge and noise floor for plain SGD only.
    Parameter errors are measured against the data's true parameters, or its least-squares fit (a table)."""
    batch_size = cfg.batch_size if plain_sgd(cfg) else None
    loss = cfg.loss.name.value
    return reference(data.features, data.labels, data.true_w, data.true_b, loss, cfg.lr, batch_size=batch_size)


def run_pipeline(
    cfg: Config,
    on_epoch: Callable[[EpochResult], None] = lambda _: None,
    on_reference: Callable[[Reference], None] = lambda _: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """The seven steps, top to bottom, on ``cfg.threads`` torch threads. ``on_reference`` gets the closed-form
    references before training."""
    with torch_threads(cfg.threads):
        device = cfg.device.resolve()
        data = generate_dataset(cfg)  # 1: (n, d), (n, 1), on the CPU so every device sees the same data
        ref = closed_form(cfg, data)  # ref.against: what the parameter errors are measured against
        on_reference(ref)
        features, labels = data.features.to(device), data.labels.to(device)
        reader = read_dataset(cfg, features, labels)  # 2
        w, b = init_model_params(cfg, features.shape[1])  # 3: (d, 1), (1,)
        net = define_model(cfg, w, b, device)  # 4
        loss = define_loss(cfg)  # 5
        optimizer = define_optimizer(cfg, net)  # 6
        return train(Problem(cfg, net, loss, optimizer, reader, features, labels, ref, on_epoch, should_stop))  # 7
