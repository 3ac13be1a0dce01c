"""Theory beside every run: the best any estimator does on the same data, and the lr where GD must diverge.

With A = [X, 1] (n, d+1) and θ = (w, b), the configured loss is L(θ) = c/n · ‖Aθ − y‖², with c = ½ for
``squared`` and c = 1 for ``mse``. Its Hessian is H = 2c · AᵀA/n: AᵀA/n under ``squared``, twice that
under ``mse``. Gradient descent on a quadratic is stable only for lr < 2/λ_max(H) (``lr_critical``).
Minibatch noise makes SGD's edge somewhat lower; ``lr_ratio`` = lr/lr_critical says which side a run is on.
The least-squares fit (OLS) is the floor of statistical error, apart from any optimisation error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_SCALE = {"squared": 0.5, "mse": 1.0}  # c in L = c/n · ‖Aθ − y‖²


@dataclass(frozen=True)
class Reference:
    ols_train_loss: float  # the configured loss of the least-squares fit on the training set
    ols_w_error: float  # ‖w_ols − true_w‖₂
    ols_b_error: float  # |b_ols − true_b|
    lr_critical: float  # 2 / λ_max(Hessian of the configured loss)
    lr_ratio: float  # lr / lr_critical
    # Empty when AᵀA is invertible; else why the OLS fit is the minimum-norm least-squares solution.
    ols_note: str = ""

    def as_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, float)}


def reference(
    features: torch.Tensor, labels: torch.Tensor, true_w: list[float], true_b: float, loss: str, lr: float
) -> Reference:
    """Closed-form references for one dataset and loss, in float64."""
    X = features.detach().double().cpu()  # (n, d)
    y = labels.detach().double().cpu().reshape(-1)  # (n,)
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)  # (n, d+1)
    # Normal equations from element-wise products and torch reductions rather than BLAS matmul/lstsq,
    # whose summation order can depend on memory alignment: the references must be bit-reproducible.
    columns = A.T.contiguous()  # (d+1, n)
    gram = torch.stack([(columns * column).sum(1) for column in columns])  # AᵀA, (d+1, d+1)
    moments = (A * y.unsqueeze(1)).sum(0)  # Aᵀy, (d+1,)
    rank = int(torch.linalg.matrix_rank(gram))
    if rank == len(gram):
        theta, note = torch.linalg.solve(gram, moments), ""  # (d+1,)
    else:  # fewer examples than d+1 (or collinear features): the minimum-norm least-squares fit
        theta = torch.linalg.pinv(gram, hermitian=True) @ moments
        note = f"min-norm least squares: rank(AᵀA) = {rank} < d+1 = {len(gram)} (n = {len(A)})"
    scale = LOSS_SCALE[loss]
    residual = (A * theta).sum(1) - y  # (n,)
    hessian = 2 * scale * gram / len(A)
    lr_critical = 2 / float(torch.linalg.eigvalsh(hessian).max())
    return Reference(
        ols_train_loss=float(scale * (residual**2).mean()),
        ols_w_error=float(torch.linalg.vector_norm(theta[:-1] - torch.tensor(true_w, dtype=X.dtype))),
        ols_b_error=float((theta[-1] - true_b).abs()),
        lr_critical=lr_critical,
        lr_ratio=lr / lr_critical,
        ols_note=note,
    )
