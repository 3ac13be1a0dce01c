"""The reference implementations: the seed's training loops (``/work/shared/seed/linear-regression.md``).

Copied from the seed line for line, so that ``make bench`` measures lrlab against the code it grew from.
What differs, and why:

- each loop is wrapped in a function of the data and the settings (the seed runs them at module level);
- ``print`` is a ``report`` argument (the benchmark passes a no-op: printing is not what is measured);
- ``linreg``, ``squared_loss`` and the initialisation of ``w`` and ``b`` are not in the seed document; they
  are d2l §3.2's (``d2l/torch.py``), which the seed's loop calls.

The one-letter names (``l`` for a loss) are the seed's, kept on purpose.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import nn
from torch.utils import data


# §3.2 from scratch ---------------------------------------------------------------------------------------
def data_iter(batch_size, features, labels):
    num_examples = len(features)
    indices = list(range(num_examples))
    # 这些样本是随机读取的，没有特定的顺序
    random.shuffle(indices)
    for i in range(0, num_examples, batch_size):
        batch_indices = torch.tensor(indices[i : min(i + batch_size, num_examples)])
        yield features[batch_indices], labels[batch_indices]


def linreg(X, w, b):  # @save
    """线性回归模型 (d2l §3.2)"""
    return torch.matmul(X, w) + b


def squared_loss(y_hat, y):  # @save
    """均方损失 (d2l §3.2)"""
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params, lr, batch_size):  # @save
    """小批量随机梯度下降"""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def train_scratch(
    features: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 10,
    lr: float = 0.03,
    num_epochs: int = 3,
    report: Callable[[str], None] = print,
) -> tuple[torch.Tensor, torch.Tensor]:
    """§3.2's loop: ``data_iter``, ``linreg``, ``squared_loss``, ``sgd``; returns (w, b)."""
    w = torch.normal(0, 0.01, size=(features.shape[1], 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    net = linreg
    loss = squared_loss
    for epoch in range(num_epochs):
        for X, y in data_iter(batch_size, features, labels):
            l = loss(net(X, w, b), y)  # noqa: E741  # X和y的小批量损失
            # 因为l形状是(batch_size,1)，而不是一个标量。l中的所有元素被加到一起，
            # 并以此计算关于[w,b]的梯度
            l.sum().backward()
            sgd([w, b], lr, batch_size)  # 使用参数的梯度更新参数
        with torch.no_grad():
            train_l = loss(net(features, w, b), labels)
            report(f"epoch {epoch + 1}, loss {float(train_l.mean()):f}")
    return w, b


# §3.3 concise ---------------------------------------------------------------------------------------------
def load_array(data_arrays, batch_size, is_train=True):  # @save
    """构造一个PyTorch数据迭代器"""
    dataset = data.TensorDataset(*data_arrays)
    return data.DataLoader(dataset, batch_size, shuffle=is_train)


def train_concise(
    features: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 10,
    lr: float = 0.03,
    num_epochs: int = 3,
    report: Callable[[str], None] = print,
) -> nn.Sequential:
    """§3.3's loop: ``DataLoader``, ``nn.Linear``, ``nn.MSELoss``, ``torch.optim.SGD``; returns the model."""
    data_iter = load_array((features, labels), batch_size)
    # nn是神经网络的缩写
    net = nn.Sequential(nn.Linear(features.shape[1], 1))
    net[0].weight.data.normal_(0, 0.01)  # type: ignore[operator]
    net[0].bias.data.fill_(0)  # type: ignore[operator]
    loss = nn.MSELoss()
    trainer = torch.optim.SGD(net.parameters(), lr=lr)
    for epoch in range(num_epochs):
        for X, y in data_iter:
            l = loss(net(X), y)  # noqa: E741
            trainer.zero_grad()
            l.backward()
            trainer.step()
        l = loss(net(features), labels)  # noqa: E741
        report(f"epoch {epoch + 1}, loss {l:f}")
    return net
