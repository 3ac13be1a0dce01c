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


CHUNK_ROWS = 1 << 16  # rows of A in float64 at a time: 65536·(d+1)·8 bytes per copy (1.5 MiB at d=2)


def _design_rows(features: torch.Tensor, start: int, chunk_rows: int) -> torch.Tensor:
    """Rows ``start:start + chunk_rows`` of A = [X, 1] in float64, (c, d+1), written in place (no float64 X beside)."""
    X = features[start : start + chunk_rows].detach()  # (c, d)
    A = torch.empty(len(X), X.shape[1] + 1, dtype=torch.float64)
    A[:, :-1].copy_(X)
    A[:, -1] = 1.0
    return A


def normal_equations(
    features: torch.Tensor, labels: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """AᵀA (d+1, d+1) and Aᵀy (d+1,) in float64, with A = [X, 1], reading ``chunk_rows`` rows at a time.

    A is never materialised whole in float64 (at n = 10^7, d = 2 that was 240 MB a copy, several copies):
    each chunk is converted, multiplied and reduced on its own, and the per-chunk sums are added in order,
    in float64. Element-wise products and torch reductions rather than BLAS matmul/lstsq, whose summation
    order can depend on memory alignment: the references must be bit-reproducible run to run.

    Memory: at most two (c, d+1) float64 arrays at a time, and AᵀA (``_gram``).

    What chunking changes: for n ≤ ``chunk_rows`` the operations are exactly the one-shot formula's (one
    chunk, no addition), so the sums are bit-identical to it; beyond, the sums are added in another order
    and agree with the one-shot formula to float64 round-off (within 1e-12 relative,
    ``tests/unit/test_theory.py``), and are still the same bits in every run. As before the chunking, a
    reduction that torch splits across threads (a chunk of more than 32768 elements) is summed in an order
    that depends on the number of threads: the bits are those of one machine and thread count.
    """
    gram = moments = None
    for start in range(0, len(features), chunk_rows):
        A = _design_rows(features, start, chunk_rows)  # (c, d+1)
        y = labels[start : start + chunk_rows].detach().double().cpu().reshape(-1)  # (c,)
        chunk_moments = (A * y.unsqueeze(1)).sum(0)  # Aᵀy of the chunk, (d+1,)
        columns = A.T.contiguous()  # (d+1, c)
        del A
        chunk_gram = _gram(columns)  # AᵀA of the chunk
        del columns
        gram = chunk_gram if gram is None else gram.add_(chunk_gram)
        moments = chunk_moments if moments is None else moments.add_(chunk_moments)
    assert gram is not None and moments is not None, "no examples"
    return gram, moments


GRAM_BLOCK = 64  # columns of A multiplied at once by ``_gram``


def _gram(columns: torch.Tensor) -> torch.Tensor:
    """AᵀA (m, m) from Aᵀ (m, c): entry (j, i) is (Aᵀ[i] · Aᵀ[j]).sum(), the element-wise product and row sum
    of the per-column formula, bit for bit (a row's sum is one thread's, however many rows are summed at once).

    Blocks of ``GRAM_BLOCK`` rows of Aᵀ times one row at a time, through one product buffer: the lower
    triangle, mirrored (the products commute exactly). No (m, c) temporary per column: allocating one per
    column fragmented the heap, and the peak grew with the number of features cubed.
    """
    m = len(columns)
    gram = torch.empty(m, m, dtype=torch.float64)
    starts = list(range(0, m, GRAM_BLOCK))
    if len(starts) > 1 and m - starts[-1] == 1:
        starts.pop()  # no block of one row: torch splits a single sum across threads, in another order
    product = torch.empty(min(m, GRAM_BLOCK + 1), columns.shape[1], dtype=torch.float64)
    for start, end in zip(starts, [*starts[1:], m], strict=True):
        block, buffer = columns[start:end], product[: end - start]
        for j in range(start, m):
            torch.sum(torch.mul(block, columns[j], out=buffer), 1, out=gram[j, start:end])
    for i in range(m - 1):
        gram[i, i + 1 :] = gram[i + 1 :, i]
    return gram


def _squared_residuals(
    features: torch.Tensor, labels: torch.Tensor, theta: torch.Tensor, chunk_rows: int
) -> torch.Tensor:
    """‖Aθ − y‖² in float64, chunk by chunk as ``normal_equations`` reads A (0-dim)."""
    total = None
    for start in range(0, len(features), chunk_rows):
        A = _design_rows(features, start, chunk_rows)  # (c, d+1)
        y = labels[start : start + chunk_rows].detach().double().cpu().reshape(-1)  # (c,)
        chunk = (((A * theta).sum(1) - y) ** 2).sum()
        del A
        total = chunk if total is None else total.add_(chunk)
    assert total is not None, "no examples"
    return total


def reference(
    features: torch.Tensor,
    labels: torch.Tensor,
    true_w: list[float],
    true_b: float,
    loss: str,
    lr: float,
    chunk_rows: int = CHUNK_ROWS,
) -> Reference:
    """Closed-form references for one dataset and loss, in float64, reading the data ``chunk_rows`` rows at a
    time (see ``normal_equations``): memory beyond the data is a few chunks, whatever n is."""
    num_examples = len(features)
    gram, moments = normal_equations(features, labels, chunk_rows)  # (d+1, d+1), (d+1,)
    rank = int(torch.linalg.matrix_rank(gram))
    if rank == len(gram):
        theta, note = torch.linalg.solve(gram, moments), ""  # (d+1,)
    else:  # fewer examples than d+1 (or collinear features): the minimum-norm least-squares fit
        theta = torch.linalg.pinv(gram, hermitian=True) @ moments
        note = f"min-norm least squares: rank(AᵀA) = {rank} < d+1 = {len(gram)} (n = {num_examples})"
    scale = LOSS_SCALE[loss]
    hessian = 2 * scale * gram / num_examples
    lr_critical = 2 / float(torch.linalg.eigvalsh(hessian).max())
    # mean() on the CPU is sum() then a division by n, so this is the one-shot (residual**2).mean().
    mean_squared_residual = _squared_residuals(features, labels, theta, chunk_rows) / num_examples
    return Reference(
        ols_train_loss=float(scale * mean_squared_residual),
        ols_w_error=float(torch.linalg.vector_norm(theta[:-1] - torch.tensor(true_w, dtype=torch.float64))),
        ols_b_error=float((theta[-1] - true_b).abs()),
        lr_critical=lr_critical,
        lr_ratio=lr / lr_critical,
        ols_note=note,
    )
