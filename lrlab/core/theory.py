"""Theory beside every run: the best any estimator does on the same data, and the lr where (S)GD must diverge.

With A = [X, 1] (n, d+1) and θ = (w, b), the configured loss is L(θ) = c/n · ‖Aθ − y‖², with c = ½ for
``squared`` and c = 1 for ``mse``. Its Hessian is H = 2c · AᵀA/n: AᵀA/n under ``squared``, twice that
under ``mse``. Gradient descent on a quadratic is stable only for lr < 2/λ_max(H) (``lr_critical_gd``);
``lr_ratio`` = lr/lr_critical_gd says which side of that edge a run is on.
The least-squares fit (OLS) is the floor of statistical error, apart from any optimisation error.

For plain minibatch SGD (``SgdTheory``, batch b, sampling with replacement, a constant step, no momentum):
``lr_critical_ms``, the lr past which E‖θ − θ_ols‖² diverges, and ``theory_excess_loss``, the stationary
excess loss at the run's lr. See ``SgdTheory`` and docs/record.md for what they assume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from lrlab.core.config import LEAST_SQUARES_FIT, TRUE_PARAMETERS

LOSS_SCALE = {"squared": 0.5, "mse": 1.0}  # c in L = c/n · ‖Aθ − y‖²


@dataclass(frozen=True)
class Parameters:
    """A (w, b) that a run's parameter errors are measured against, and which one it is."""

    w: tuple[float, ...]  # (d,)
    b: float
    kind: str  # TRUE_PARAMETERS (those that generated the data) or LEAST_SQUARES_FIT (a table has none)


@dataclass(frozen=True)
class Reference:
    ols_train_loss: float  # the configured loss of the least-squares fit on the training set
    ols_w_error: float  # ‖w_ols − against.w‖₂ (0 where the fit is what errors are measured against)
    ols_b_error: float  # |b_ols − against.b|
    lr_critical_gd: float  # 2 / λ_max(Hessian of the configured loss): full-batch GD's edge
    lr_ratio: float  # lr / lr_critical_gd
    against: Parameters  # what parameter errors (these, and each epoch's w_error, b_error) are measured against
    # Plain SGD only (None otherwise: momentum, adam, a rank-deficient fit, more than SGD_MAX_FEATURES features):
    lr_critical_ms: float | None = None  # the lr past which SGD's mean square E‖θ − θ_ols‖² diverges
    theory_excess_loss: float | None = None  # SGD's stationary E[loss − ols_train_loss] at lr (None past the edge)
    # Empty when AᵀA is invertible; else why the OLS fit is the minimum-norm least-squares solution.
    ols_note: str = ""
    sgd: SgdTheory | None = field(default=None, compare=False, repr=False)  # what gives the two above at any lr

    def as_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, float)}

    def at(self, lr: float, plain_sgd: bool) -> Reference:
        """The references of a run of these data at ``lr``; the SGD ones only where ``plain_sgd`` (a step of
        sgd_scratch, or sgd without momentum) and the SGD theory was prepared (``reference(batch_size=...)``)."""
        sgd = self.sgd if plain_sgd else None
        edge = sgd.lr_edge() if sgd else None
        excess = sgd.excess_loss(lr) if sgd else None  # None at or past the edge
        return replace(self, lr_ratio=lr / self.lr_critical_gd, lr_critical_ms=edge, theory_excess_loss=excess)


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


# Columns of A multiplied at once by ``_gram``: its product buffer, GRAM_BLOCK·chunk_rows float64 (4 MiB of a full
# chunk), stays in cache between the multiplication and the sum (64 took twice as long at d=100, n=10^5).
GRAM_BLOCK = 8


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
    true_w: Sequence[float] | None,
    true_b: float | None,
    loss: str,
    lr: float,
    chunk_rows: int = CHUNK_ROWS,
    *,
    batch_size: int | None = None,
) -> Reference:
    """Closed-form references for one dataset and loss, in float64, reading the data ``chunk_rows`` rows at a
    time (see ``normal_equations``): memory beyond the data is a few chunks, whatever n is. With ``batch_size``
    (a run of plain SGD) also SGD's edge and noise floor at that batch size (``SgdTheory``). Parameter errors are
    measured against ``true_w`` and ``true_b``, or, where the data has none (None: a table), against the fit."""
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
    lr_critical_gd = 2 / float(torch.linalg.eigvalsh(hessian).max())
    # mean() on the CPU is sum() then a division by n, so this is the one-shot (residual**2).mean().
    mean_squared_residual = _squared_residuals(features, labels, theta, chunk_rows) / num_examples
    sgd = None
    if batch_size is not None and not note and len(gram) - 1 <= SGD_MAX_FEATURES:
        sgd = SgdTheory.prepare(features, labels, gram / num_examples, theta, batch_size, scale, chunk_rows)
    if true_w is None or true_b is None:
        against = Parameters(tuple(theta[:-1].tolist()), float(theta[-1]), LEAST_SQUARES_FIT)
    else:
        against = Parameters(tuple(true_w), true_b, TRUE_PARAMETERS)
    return Reference(
        ols_train_loss=float(scale * mean_squared_residual),
        ols_w_error=float(torch.linalg.vector_norm(theta[:-1] - torch.tensor(against.w, dtype=torch.float64))),
        ols_b_error=float((theta[-1] - against.b).abs()),
        lr_critical_gd=lr_critical_gd,
        lr_ratio=lr / lr_critical_gd,
        against=against,
        ols_note=note,
        sgd=sgd,
    ).at(lr, sgd is not None)


# SGD's theory. Rows of A that M(Σ) averages over: all up to SGD_ROWS, beyond a fixed seeded subsample of SGD_ROWS
# (each application of T costs 4·rows·(d+1)² flops; docs/record.md has the error the subsample makes).
SGD_ROWS = 1 << 14
SGD_ROWS_SEED = 0
SGD_MAX_FEATURES = 256  # wider: no SGD theory (its cost grows as d² per row and step)
SGD_TOL = 1e-10  # relative residual at which Lanczos stops for each fixed point
SGD_EDGE_TOL = 1e-12  # relative error of the edge (estimated from the top Ritz pair) at which Lanczos stops for it
SGD_MAX_STEPS = 300  # Lanczos steps at most; unconverged there, the quantity is not logged
SGD_BLOCK_BYTES = 1 << 21  # float64 rows per matrix product (2 MiB): a block and its product stay in cache


def _block_rows(width: int) -> int:
    """Rows of ``width`` float64 columns in one block of SGD_BLOCK_BYTES."""
    return max(64, SGD_BLOCK_BYTES // (8 * width))


class SgdTheory:
    """The second moment of SGD's error, e = θ − θ_ols (bias included), under plain minibatch SGD: each step
    draws b examples uniformly WITH replacement and steps by η on the mean gradient of ½(aᵀθ − y)² (``mse``'s
    gradient is twice that: η = 2c·lr). With H = AᵀA/n, r the OLS residuals and G = mean r² aaᵀ, Σ = E[eeᵀ]
    follows exactly (once E[e] = (I − ηH)ᵗ e₀ has died out)

        Σ' = T_η(Σ) + (η²/b) G,   T_η = I − ηL + η²K,   L(Σ) = HΣ + ΣH,
        K(Σ) = (1 − 1/b) HΣH + M(Σ)/b,   M(Σ) = mean (aᵀΣa) aaᵀ = Aᵀ diag(aᵢᵀΣaᵢ) A / n.

    The edge. K and L are symmetric on symmetric matrices (trace inner product), L positive definite, K
    positive semi-definite. T_η maps PSD to PSD (it is (I−ηH)Σ(I−ηH) plus (η²/b)·the covariance of aaᵀΣ^½),
    so its spectral radius ρ is an eigenvalue with a PSD eigenvector V (Krein–Rutman). From T_η V = ρV,
    (1 − ρ)‖V‖² = η⟨V, LV⟩ − η²⟨V, KV⟩ ≥ η⟨V, LV⟩(1 − ημ) with μ the largest eigenvalue of KV = μLV:
    ρ < 1 for η < 1/μ, and at η = 1/μ that eigenvector has T_η V = V. The mean-square edge is η* = 1/μ, with
    no bisection: μ is the top Ritz value of Lanczos on L⁻¹K (self-adjoint in ⟨X, Y⟩_L = tr(X L(Y))). Lanczos
    stops for it once the top Ritz value's error, r²/gap (Kato–Temple, r its residual and the gap to the next
    Ritz value), is below SGD_EDGE_TOL relative: the eigenvalue converges as the square of its residual.

    The fixed point. Σ∞ = T_η(Σ∞) + (η²/b)G is (L − ηK)Σ∞ = (η/b)G, positive definite for η < η*: the same
    Lanczos, started from L⁻¹G, solves it for every η at once (a shifted tridiagonal system per η), and
    E[excess loss] = c·tr(HΣ∞) needs only tr(H vⱼ) of each Lanczos vector. Lanczos stops for it once the
    error bound residual/(1 − η/η*) is below SGD_TOL relative. For small η it is c·η tr(G)/(2b): η tr(G)/(4b)
    under ``squared``.

    The Krylov vectors live in H's eigenbasis (H = UΛUᵀ once, O(d³)), where L⁻¹ and HΣH are element-wise, and
    only three are kept (plain Lanczos, three-term). One step applies M once: UΣUᵀ back to the data's basis
    (O(d³)), then per block of SGD_BLOCK_BYTES of rows two float64 matrix products, aᵢᵀΣaᵢ from AΣ and
    Aᵀ diag(aᵢᵀΣaᵢ) A, O(rows·d²) in all, with the block and its products in cache. Each quantity stops at
    the first Lanczos step where its own criterion holds, so it has the same bits however far the shared
    Lanczos has run for other learning rates (a group of the vectorized launcher). The products are numpy's
    (OpenBLAS) matmuls: the same bits run to run on one machine, on any number of BLAS threads
    (``tests/unit/test_sgd_theory.py``).
    """

    def __init__(
        self,
        eigenvalues: np.ndarray,
        basis: np.ndarray,
        rows: np.ndarray,
        noise: np.ndarray,
        batch_size: int,
        scale: float,
    ):
        """``eigenvalues`` (p,) and eigenvectors ``basis`` (p, p) of H, ``rows`` of A (m, p) that M averages
        over, and ``noise`` G (p, p), both in the data's basis."""
        self.eigenvalues, self.basis, self.rows = eigenvalues, basis, rows
        self.batch_size, self.scale = batch_size, scale
        self.sums = eigenvalues[:, None] + eigenvalues[None, :]  # L in H's eigenbasis: (LΣ)ᵢⱼ = (λᵢ + λⱼ)Σᵢⱼ
        self.products = eigenvalues[:, None] * eigenvalues[None, :]  # (HΣH)ᵢⱼ = λᵢλⱼΣᵢⱼ
        noisy = bool(np.trace(noise) > 0)
        noise = basis.T @ noise @ basis  # G in H's eigenbasis
        start = (noise if noisy else np.diag(eigenvalues)) / self.sums  # L⁻¹G (without noise: any PSD start)
        norm = self._norm(start)
        self.start_norm = norm if noisy else 0.0
        self._vector, self._previous = start / norm, np.zeros_like(start)
        self.alphas: list[float] = []  # the Lanczos tridiagonal T: its diagonal
        self.betas: list[float] = []  # and off-diagonal; betas[k - 1] couples T_k to the next vector
        self.traces: list[float] = []  # tr(H vⱼ)
        self._steps = min(SGD_MAX_STEPS, len(eigenvalues) * (len(eigenvalues) + 1) // 2)
        self._exhausted = False
        self._edge: tuple[float | None] | None = None  # cached (η*,) in steps on ½(aᵀθ − y)²

    @classmethod
    def prepare(
        cls,
        features: torch.Tensor,
        labels: torch.Tensor,
        second_moment: torch.Tensor,
        theta: torch.Tensor,
        batch_size: int,
        scale: float,
        chunk_rows: int = CHUNK_ROWS,
    ) -> SgdTheory | None:
        """From the data, H = AᵀA/n (float64) and the OLS fit ``theta``: None where H is not positive definite."""
        eigenvalues, basis = np.linalg.eigh(second_moment.numpy())
        if not eigenvalues[0] > 0:
            return None
        noise = _noise_moment(features, labels, theta.numpy(), chunk_rows)
        return cls(eigenvalues, basis, _theory_rows(features), noise, batch_size, scale)

    def _norm(self, matrix: np.ndarray) -> float:
        return math.sqrt(float(np.sum(matrix * matrix * self.sums)))  # ‖X‖_L = tr(X L(X))^½

    def _apply_k(self, matrix: np.ndarray) -> np.ndarray:
        """K(Σ) for Σ in H's eigenbasis, in it."""
        basis, b = self.basis, self.batch_size
        m = basis.T @ _fourth_moment(self.rows, basis @ matrix @ basis.T) @ basis / len(self.rows)
        return (1 - 1 / b) * self.products * matrix + (m + m.T) / (2 * b)

    def _grow(self) -> bool:
        """One more Lanczos step on L⁻¹K; False where there is none (an invariant subspace, or SGD_MAX_STEPS)."""
        if self._exhausted:
            return False
        vector = self._vector
        self.traces.append(float(np.dot(self.eigenvalues, np.diag(vector))))
        applied = self._apply_k(vector)
        alpha = float(np.sum(vector * applied))
        following = applied / self.sums - alpha * vector - (self.betas[-1] if self.betas else 0.0) * self._previous
        beta = self._norm(following)
        spanned = len(self.alphas) + 1 == len(self.eigenvalues) * (len(self.eigenvalues) + 1) // 2
        exact = spanned or beta <= 1e-13 * max([alpha, *self.alphas])
        self.alphas.append(alpha)
        self.betas.append(0.0 if exact else beta)
        self._exhausted = exact or len(self.alphas) >= self._steps
        if not self._exhausted:
            self._previous, self._vector = vector, following / beta
        return True

    def _tridiagonal(self, steps: int) -> np.ndarray:
        t = np.diag(self.alphas[:steps])
        off = np.array(self.betas[: steps - 1])
        return t + np.diag(off, 1) + np.diag(off, -1)

    def step_edge(self) -> float | None:
        """η*, the mean-square edge in steps on ½(aᵀθ − y)²; None if Lanczos did not converge."""
        if self._edge is None:
            edge, steps = None, 0
            while steps < len(self.alphas) or self._grow():
                steps += 1
                values, vectors = np.linalg.eigh(self._tridiagonal(steps))
                residual = self.betas[steps - 1] * abs(vectors[-1, -1])  # of the top Ritz pair, in ‖·‖_L
                gap = values[-1] - values[-2] if steps > 1 else 0.0  # to the next Ritz value
                error = residual * residual / gap if gap > residual else residual  # Kato–Temple, else Weyl
                if error <= SGD_EDGE_TOL * values[-1]:
                    edge = 1 / float(values[-1])
                    break
            self._edge = (edge,)
        return self._edge[0]

    def stationary_trace(self, step: float) -> float | None:
        """tr(HΣ∞) at step η (on ½(aᵀθ − y)²); None at or past the edge, or if Lanczos did not converge."""
        edge = self.step_edge()
        if edge is None or step >= edge:
            return None
        if self.start_norm == 0.0:
            return 0.0
        margin = 1 - step / edge  # ‖(I − ηL⁻¹K)⁻¹‖ ≤ 1/margin: the residual bounds the error
        steps = 0
        while steps < len(self.alphas) or self._grow():
            steps += 1
            y = _tridiagonal_solve(
                [1 - step * a for a in self.alphas[:steps]], [-step * b for b in self.betas[: steps - 1]]
            )  # (I − ηT_k) y = e₁
            if step * self.betas[steps - 1] * abs(y[-1]) <= SGD_TOL * margin:
                weighted = math.fsum(t * v for t, v in zip(self.traces[:steps], y, strict=True))
                return step / self.batch_size * self.start_norm * weighted
        return None

    def lr_edge(self) -> float | None:
        """``lr_critical_ms``: the mean-square edge as the configured loss's lr."""
        edge = self.step_edge()
        return None if edge is None else edge / (2 * self.scale)

    def excess_loss(self, lr: float) -> float | None:
        """``theory_excess_loss``: E[loss − ols_train_loss] of the configured loss at stationarity, at ``lr``."""
        trace = self.stationary_trace(2 * self.scale * lr)
        return None if trace is None else self.scale * trace


def _tridiagonal_solve(diagonal: list[float], off: list[float]) -> list[float]:
    """y with S y = e₁ for the symmetric tridiagonal S (Thomas' algorithm; S is positive definite here)."""
    size = len(diagonal)
    upper, rhs = [0.0] * size, [0.0] * size
    pivot = diagonal[0]
    rhs[0] = 1 / pivot
    for i in range(1, size):
        upper[i - 1] = off[i - 1] / pivot
        pivot = diagonal[i] - off[i - 1] * upper[i - 1]
        rhs[i] = -off[i - 1] * rhs[i - 1] / pivot
    for i in range(size - 2, -1, -1):
        rhs[i] -= upper[i] * rhs[i + 1]
    return rhs


def _fourth_moment(rows: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Aᵀ diag(aᵢᵀΣaᵢ) A (p, p) over ``rows`` A (m, p), for a symmetric Σ = ``matrix``: n·M(Σ), not yet divided.

    A block of rows at a time (``_block_rows``): its product AΣ and the weighted rows stay in cache, where the
    whole (m, p) temporaries would stream through memory."""
    block = min(len(rows), _block_rows(rows.shape[1]))
    total = np.zeros_like(matrix)
    buffer = np.empty((block, rows.shape[1]))  # AΣ of a block, then its rows weighted by aᵢᵀΣaᵢ
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]  # (c, p)
        product = buffer[: len(chunk)]
        np.matmul(chunk, matrix, out=product)  # AΣ
        quadratic = np.einsum("ij,ij->i", product, chunk)  # aᵢᵀΣaᵢ, (c,)
        np.multiply(chunk, quadratic[:, None], out=product)
        total += product.T @ chunk
    return total


def _noise_moment(features: torch.Tensor, labels: torch.Tensor, theta: np.ndarray, chunk_rows: int) -> np.ndarray:
    """G = mean r² aaᵀ over all n examples, r the OLS residuals: ``chunk_rows`` rows of the data at a time as
    ``normal_equations`` reads them, each in blocks of ``_block_rows`` float64 rows (|r|·A, then its Gram
    matrix, which numpy computes as a symmetric rank-k update)."""
    width = len(theta)
    block = min(len(features), _block_rows(width))
    design = np.empty((block, width))  # rows of A, then of |r|·A, one block at a time
    total = np.zeros((width, width))
    for start in range(0, len(features), chunk_rows):
        X = features[start : start + chunk_rows].detach().cpu().numpy()  # (c, d)
        y = labels[start : start + chunk_rows].detach().cpu().reshape(-1).numpy()  # (c,)
        for offset in range(0, len(X), block):
            A = design[: len(X[offset : offset + block])]
            A[:, :-1] = X[offset : offset + block]
            A[:, -1] = 1.0
            residuals = A @ theta
            residuals -= y[offset : offset + block]
            np.multiply(A, np.abs(residuals)[:, None], out=A)
            total += A.T @ A
    return total / len(features)


def _theory_rows(features: torch.Tensor) -> np.ndarray:
    """The rows of A = [X, 1] that M(Σ) averages over, float64 (m, d+1): all n up to SGD_ROWS, else a fixed
    subsample of SGD_ROWS rows (without repeats, seeded, in index order)."""
    X = features.detach()
    if len(X) > SGD_ROWS:
        chosen = np.sort(np.random.default_rng(SGD_ROWS_SEED).choice(len(X), SGD_ROWS, replace=False))
        X = X[torch.from_numpy(chosen).to(X.device)]
    rows = np.empty((len(X), X.shape[1] + 1))
    rows[:, :-1] = X.cpu().numpy()
    rows[:, -1] = 1.0
    return rows


def stationary_excess_loss(excess_losses: Sequence[float], epochs: int, theory: float | None) -> dict[str, float]:
    """``theory_epochs``'s metrics: ``measured_excess_loss``, the mean excess_loss over the last ``epochs``
    epochs (all there are if fewer), and ``excess_loss_ratio`` = measured / ``theory`` where a positive theory
    was logged. Nothing for ``epochs`` = 0."""
    last = list(excess_losses)[-epochs:] if epochs > 0 else []
    if not last:
        return {}
    measured = math.fsum(last) / len(last)
    metrics = {"measured_excess_loss": measured}
    if theory is not None and theory > 0:
        metrics["excess_loss_ratio"] = measured / theory
    return metrics


def averaged_transient(hessian: np.ndarray, error: np.ndarray, lr: float, start: int, total: int) -> np.ndarray:
    """Where the average of gradient descent's iterates sits, relative to the minimiser: the mean of
    (I − lr·hessian)^k · error over k = start+1 … total, in float64, from the eigenvalues (closed form).

    It is the bias of averaged SGD (``averaging``, from step ``start`` of ``total``, ``lrlab/core/schedules.py``)
    from its initial error ``error`` = θ₀ − θ_ols, without the minibatch noise: with ``hessian`` the loss's
    (2c·AᵀA/n, ``LOSS_SCALE``), (Bach & Moulines 2013) it falls as 1/(lr·λ·count) once the transient is over."""
    values, vectors = np.linalg.eigh(np.asarray(hessian, dtype=np.float64))
    factor = 1.0 - lr * values  # per eigendirection, each step
    count = total - start
    sums = np.empty_like(factor)  # Σ_{k=start+1}^{total} factor^k
    for i, a in enumerate(factor):
        if abs(1.0 - a) < 1e-12:
            sums[i] = count * a ** (start + 1)
        else:
            sums[i] = a ** (start + 1) * (1.0 - a**count) / (1.0 - a)
    along = vectors.T @ np.asarray(error, dtype=np.float64)
    return np.asarray(vectors @ (sums * along / count))
