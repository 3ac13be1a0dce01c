"""Step 3 (初始化模型参数) and step 4 (定义模型): the initial parameters and the two models, ŷ = X @ w + b. Both start
from the same draw, w ~ N(0, init_std²), b = 0, so that ``scratch`` and ``linear`` are comparable run for run."""

from __future__ import annotations

import torch
from torch import nn


def init_params(dim: int, init_std: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """初始化模型参数: w ~ N(0, init_std²) of shape (d, 1), b = 0 of shape (1,)."""
    return torch.normal(0.0, init_std, (dim, 1), generator=generator), torch.zeros(1)


class ScratchLinReg(nn.Module):
    """§3.2: the manual tensors ``w`` (d, 1) and ``b`` (1,) with ``requires_grad``, and ``linreg``."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        # Leaf tensors with requires_grad=True, like the seed's w and b, that .parameters() and .to(device) see.
        self.w = nn.Parameter(w.clone())  # (d, 1)
        self.b = nn.Parameter(b.clone())  # (1,)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.matmul(features, self.w) + self.b  # (B, d) @ (d, 1) + (1,) -> (B, 1)

    def estimates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(w as (d,), b as (1,)), detached."""
        return self.w.detach().reshape(-1), self.b.detach().reshape(-1)


class ConciseLinReg(nn.Module):
    """§3.3: ``nn.Linear(d, 1)``, weight ~ N(0, init_std²), bias = 0 (the seed's ``normal_``/``fill_``)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.net = nn.Linear(len(w), 1)
        with torch.no_grad():  # the seed's weight.data.normal_ / bias.data.fill_, from the same draw
            self.net.weight.copy_(w.reshape(1, -1))  # (1, d)
            self.net.bias.copy_(b)  # (1,)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)  # (B, 1)

    def estimates(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.weight.detach().reshape(-1), self.net.bias.detach().reshape(-1)


LinReg = ScratchLinReg | ConciseLinReg

MODELS: dict[str, type[ScratchLinReg] | type[ConciseLinReg]] = {
    "scratch": ScratchLinReg,
    "linear": ConciseLinReg,
}
