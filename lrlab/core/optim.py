"""Step 6 (定义优化算法): how one minibatch's (B, 1) per-example losses update the parameters. ``ScratchSGD`` is the
seed's §3.2 loop body (sum, backward, ``sgd``), ``TorchUpdate`` §3.3's (``zero_grad``, mean, backward, ``step``):
both step along the gradient of the minibatch *mean* loss, so the same ``lr`` means the same step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

import torch

from lrlab.core.config import OptimizerConfig, OptimizerName


def sgd(params: Iterable[torch.Tensor], lr: float, batch_size: int) -> None:
    """小批量随机梯度下降: the seed's ``sgd``, verbatim."""
    with torch.no_grad():
        for param in params:
            assert param.grad is not None
            param -= lr * param.grad / batch_size
            param.grad.zero_()


class ScratchSGD:
    """The seed's update: sum the minibatch losses, backpropagate, ``sgd(params, lr, batch_size)``.

    It divides by the size of the minibatch at hand, which is ``batch_size`` for every minibatch but a
    shorter last one, so that every example weighs the same.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        self.params = list(params)
        self.lr = lr

    def update(self, losses: torch.Tensor) -> None:
        losses.sum().backward()
        sgd(self.params, self.lr, len(losses))

    def set_lr(self, lr: float) -> None:
        self.lr = lr


class TorchUpdate:
    """A ``torch.optim`` optimiser stepping on the minibatch mean loss, as in §3.3."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def update(self, losses: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        losses.mean().backward()
        self.optimizer.step()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr


Update = ScratchSGD | TorchUpdate


def make_update(cfg: OptimizerConfig, params: Iterable[torch.Tensor], lr: float) -> Update:
    """Build the configured update rule over ``params``; an optimizer this does not know is an error."""
    match cfg.name:
        case OptimizerName.sgd_scratch:
            return ScratchSGD(params, lr)
        case OptimizerName.sgd:
            return TorchUpdate(torch.optim.SGD(params, lr=lr, momentum=cfg.momentum))
        case OptimizerName.adam:
            beta1, beta2 = cfg.betas
            return TorchUpdate(torch.optim.Adam(params, lr=lr, betas=(beta1, beta2)))
        case _:
            assert_never(cfg.name)
