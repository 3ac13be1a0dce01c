"""The closed-form references against independent computations and against gradient descent itself."""

from __future__ import annotations

import pytest
import torch

from lrlab.data import synthetic_data
from lrlab.theory import reference


def data(n: int = 500, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_data(torch.tensor([2.0, -3.4]), 4.2, n, noise, torch.Generator().manual_seed(0))


def test_ols_matches_lstsq_and_is_the_loss_floor() -> None:
    X, y = data()
    ref = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.03)
    A = torch.cat([X, torch.ones(len(X), 1)], 1).double()
    theta = torch.linalg.lstsq(A, y.double()).solution.reshape(-1)
    true_w = torch.tensor([2.0, -3.4], dtype=torch.float64)
    assert ref.ols_w_error == pytest.approx(float(torch.linalg.vector_norm(theta[:2] - true_w)))
    assert ref.ols_b_error == pytest.approx(float((theta[2] - 4.2).abs()))
    assert ref.ols_train_loss == pytest.approx(float(((A @ theta - y.double().reshape(-1)) ** 2).mean() / 2))
    mse = reference(X, y, [2.0, -3.4], 4.2, "mse", 0.03)
    assert mse.ols_train_loss == pytest.approx(2 * ref.ols_train_loss)


@pytest.mark.parametrize("loss", ["squared", "mse"])
def test_full_batch_gd_converges_just_below_lr_critical_and_diverges_just_above(loss: str) -> None:
    X, y = data()
    lr_critical = reference(X, y, [2.0, -3.4], 4.2, loss, 1.0).lr_critical
    scale = 0.5 if loss == "squared" else 1.0
    A = torch.cat([X, torch.ones(len(X), 1)], 1).double()
    for factor, grows in [(0.95, False), (1.05, True)]:
        theta = torch.zeros(3, 1, dtype=torch.float64)
        for _ in range(400):
            theta -= factor * lr_critical * 2 * scale * A.T @ (A @ theta - y.double()) / len(A)
        assert (float(theta.abs().max()) > 1e3) is grows


def test_references_are_bit_reproducible() -> None:
    X, y = data(2000)
    first = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.03)
    again = reference(X.clone(), y.clone(), [2.0, -3.4], 4.2, "squared", 0.03)
    assert first == again
