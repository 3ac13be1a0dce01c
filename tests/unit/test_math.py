"""Oracle tests: every hand-written part against PyTorch or a closed form, with explicit tolerances."""

from __future__ import annotations

import torch
from torch import nn

from lrlab.core.data import synthetic_data
from lrlab.core.losses import LOSSES, squared_loss
from lrlab.core.models import ConciseLinReg, ScratchLinReg, init_params
from lrlab.core.optim import ScratchSGD, TorchUpdate

B, D = 16, 3


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X, y = torch.randn(B, D, generator=g), torch.randn(B, 1, generator=g)
    w, b = init_params(D, 0.5, g)
    return X, y, w, b + 0.3


def test_scratch_gradient_is_xt_residual_over_b() -> None:
    X, y, w, b = batch()
    net = ScratchLinReg(w, b)
    squared_loss(net(X), y).mean().backward()
    residual = X @ w + b - y  # (B, 1)
    assert torch.allclose(net.w.grad, X.T @ residual / B, atol=1e-6)
    assert torch.allclose(net.b.grad, residual.sum(0) / B, atol=1e-6)


def test_mse_is_twice_squared_and_matches_nn_mseloss() -> None:
    X, y, w, b = batch()
    y_hat = X @ w + b
    assert torch.allclose(LOSSES["mse"](y_hat, y), 2 * squared_loss(y_hat, y), atol=1e-6)
    assert torch.allclose(LOSSES["mse"](y_hat, y).mean(), nn.MSELoss()(y_hat, y), atol=1e-6)
    assert torch.allclose(squared_loss(y_hat, y), (y_hat - y) ** 2 / 2)


def test_one_scratch_sgd_step_equals_one_torch_sgd_step() -> None:
    X, y, w, b = batch()
    lr = 0.1
    scratch, concise = ScratchLinReg(w, b), ScratchLinReg(w, b)
    ScratchSGD(scratch.parameters(), lr).update(squared_loss(scratch(X), y))
    TorchUpdate(torch.optim.SGD(concise.parameters(), lr=lr)).update(squared_loss(concise(X), y))
    assert not torch.equal(scratch.w.detach(), w)  # it moved
    assert torch.allclose(scratch.w, concise.w, atol=1e-6)
    assert torch.allclose(scratch.b, concise.b, atol=1e-6)
    assert torch.count_nonzero(scratch.w.grad) == 0  # the seed zeroes the gradients


def test_scratch_and_linear_models_agree() -> None:
    X, _, w, b = batch()
    scratch, linear = ScratchLinReg(w, b), ConciseLinReg(w, b)
    assert torch.allclose(scratch(X), linear(X), atol=1e-6)
    for got, want in zip(scratch.estimates(), linear.estimates(), strict=True):
        assert torch.equal(got, want)


def test_noise_free_data_is_exactly_linear() -> None:
    true_w = torch.tensor([2.0, -3.4])
    X, y = synthetic_data(true_w, 4.2, 100, 0.0, torch.Generator().manual_seed(1))
    assert X.shape == (100, 2) and y.shape == (100, 1)
    assert torch.equal(y, (X @ true_w + 4.2).reshape(-1, 1))


def test_same_seed_same_data_other_seed_other_data() -> None:
    true_w = torch.tensor([2.0, -3.4])
    first = synthetic_data(true_w, 4.2, 50, 0.01, torch.Generator().manual_seed(7))
    again = synthetic_data(true_w, 4.2, 50, 0.01, torch.Generator().manual_seed(7))
    other = synthetic_data(true_w, 4.2, 50, 0.01, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
