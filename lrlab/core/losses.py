"""Step 5 (定义损失函数): per-example losses of shape (B, 1): the seed's ``squared`` ½(ŷ−y)², and §3.3's ``mse``
(ŷ−y)² with no ½, so twice the gradient (docs/configuration.md#gradient-scale). The optimiser reduces them."""

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
