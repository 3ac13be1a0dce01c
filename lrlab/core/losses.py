"""Step 5 (定义损失函数): per-example losses of shape (B, 1).

``squared`` is the seed's §3.2 loss ½(ŷ−y)²; ``mse`` is §3.3's ``nn.MSELoss`` element-wise, (ŷ−y)², with
no ½. Under ``mse`` every gradient is twice as large, so the same ``lr`` is a step twice as large.
The optimiser decides how a minibatch's per-example losses are reduced (see ``optim.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def squared_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The seed's 均方损失: ½(ŷ − y)², element-wise."""
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


LOSSES: dict[str, Loss] = {
    "squared": squared_loss,
    "mse": nn.MSELoss(reduction="none"),
}
