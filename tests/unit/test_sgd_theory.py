"""SGD's edge and noise floor (``theory.SgdTheory``) against independent computations and simulations.

Tolerances, and why:

- ``lr_critical_gd`` against numpy's 2/λ_max: 1e-12 relative (two float64 eigensolvers).
- The edge and the fixed point against the dense (d+1)²×(d+1)² operator built here from the recursion:
  ρ(T) = 1 within 1e-9 at the edge, and the fixed point within 1e-9 relative (Lanczos stops at 1e-10).
- ``theory_excess_loss`` against a numpy simulation of SGD with replacement (d = 2, n = 500, noise 1): 400
  replicas, each averaging ~4000 steps; the simulation's own standard error is asserted below 1.5%, and
  the tolerance is 5%.
- Through ``lrlab.train`` with ``reader=with_replacement`` (compiled engine, 16 seeds × the last 80 epochs):
  the standard error of the mean ratio is about 2.5%; tolerance 10%.
- The edge against simulation: mean-square divergence is carried by rare runs (a typical run still
  converges above the edge), so a sample mean over R runs follows E‖e‖² only for a few steps. Started
  from the worst second moment (T's Perron eigenvector), the mean of ‖e‖² over 20000 runs is checked to
  grow over 10 steps at 1.1× the edge (ρ¹⁰ ≈ 2.5 at b = 1) and to shrink at 0.9× (ρ¹⁰ ≈ 0.45), and to follow
  ρᵗ within 10% for the first 3 steps. Below the edge, with noise, the mean excess stays bounded over 4000
  steps: every window of 500 steps within [0.6, 1.5]× the theory.
- The small-step limit η tr(G)/(4b): within 5% at lr = edge/100 (the first correction is O(lr/edge)).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import lrlab
from lrlab.core.batched import Member, train_group
from lrlab.core.config import Config, ConfigError, OptimizerConfig, OptimizerName, ReaderConfig, ReaderName
from lrlab.core.data import synthetic_data
from lrlab.core.pipeline import closed_form, generate_dataset, plain_sgd
from lrlab.core.theory import LOSS_SCALE, averaged_transient, reference, stationary_excess_loss

SGD_KEYS = ("lr_critical_ms", "theory_excess_loss")


def data(n: int = 500, noise: float = 1.0, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_data(torch.tensor([2.0, -3.4]), 4.2, n, noise, torch.Generator().manual_seed(seed))


def design(X: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A = [X, 1], y and the OLS fit, float64."""
    A = np.concatenate([X.double().numpy(), np.ones((len(X), 1))], 1)
    labels = y.double().numpy().reshape(-1)
    return A, labels, np.linalg.lstsq(A, labels, rcond=None)[0]


def dense_operator(A: np.ndarray, b: int, eta: float) -> np.ndarray:
    """T_η as a (p², p²) matrix, column by column from the recursion Σ − η(HΣ+ΣH) + η²[(1−1/b)HΣH + M(Σ)/b]."""
    n, p = A.shape
    H = A.T @ A / n
    T = np.zeros((p * p, p * p))
    for j in range(p * p):
        E = np.zeros(p * p)
        E[j] = 1
        E = E.reshape(p, p)
        M = (A * np.einsum("ij,jk,ik->i", A, E, A)[:, None]).T @ A / n
        T[:, j] = (E - eta * (H @ E + E @ H) + eta**2 * ((1 - 1 / b) * H @ E @ H + M / b)).reshape(-1)
    return T


def noise_moment(A: np.ndarray, labels: np.ndarray, theta: np.ndarray) -> np.ndarray:
    residuals = labels - A @ theta
    return (A * residuals[:, None] ** 2).T @ A / len(A)


@pytest.mark.parametrize("loss", ["squared", "mse"])
def test_lr_critical_gd_is_two_over_the_largest_eigenvalue(loss: str) -> None:
    X, y = data()
    A, _, _ = design(X, y)
    hessian = 2 * LOSS_SCALE[loss] * A.T @ A / len(A)
    ref = reference(X, y, [2.0, -3.4], 4.2, loss, 0.1, batch_size=10)
    assert ref.lr_critical_gd == pytest.approx(2 / np.linalg.eigvalsh(hessian).max(), rel=1e-12)
    assert ref.lr_ratio == pytest.approx(0.1 / ref.lr_critical_gd, rel=1e-15)
    assert ref.lr_critical_ms is not None and ref.lr_critical_ms < ref.lr_critical_gd


@pytest.mark.parametrize("b", [1, 3, 10, 500])
def test_the_edge_is_where_the_dense_operator_reaches_one_and_the_fixed_point_solves_it(b: int) -> None:
    X, y = data()
    A, labels, theta = design(X, y)
    ref = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.01, batch_size=b)
    edge = ref.lr_critical_ms
    assert edge is not None and ref.sgd is not None

    def radius(eta: float) -> float:
        return float(np.abs(np.linalg.eigvals(dense_operator(A, b, eta))).max())

    assert radius(edge) == pytest.approx(1, abs=1e-9)
    assert radius(0.99 * edge) < 1 < radius(1.01 * edge)
    assert all(radius(f * edge) < 1 for f in (0.1, 0.5, 0.9))  # the first crossing, not a later one
    H, G, p = A.T @ A / len(A), noise_moment(A, labels, theta), A.shape[1]
    for fraction in (0.01, 0.3, 0.9, 0.999):
        eta = fraction * edge
        stationary = np.linalg.solve(np.eye(p * p) - dense_operator(A, b, eta), (eta**2 / b * G).reshape(-1))
        want = 0.5 * np.trace(H @ stationary.reshape(p, p))
        assert ref.sgd.excess_loss(eta) == pytest.approx(want, rel=1e-9)
    assert ref.sgd.excess_loss(edge) is None and ref.sgd.excess_loss(1.5 * edge) is None


W3 = [2.0, -3.4, 1.5]


@pytest.mark.parametrize("b", [1, 7, 200])
def test_blocked_lanczos_agrees_with_the_dense_operator_at_d3(b: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """d = 3, n = 200, with M(Σ) and G over blocks of 64 rows (the last one of 8) and the data read 50 rows at a
    time: the edge where the dense (d+1)²×(d+1)² operator's spectral radius crosses 1 (bisection on the dense
    operator itself, not the pencil), and the fixed point solved densely, both to 1e-8 relative."""
    import lrlab.core.theory as theory

    X, y = synthetic_data(torch.tensor(W3), 4.2, 200, 1.0, torch.Generator().manual_seed(3))
    A, labels, theta = design(X, y)
    whole = reference(X, y, W3, 4.2, "squared", 0.01, batch_size=b)
    monkeypatch.setattr(theory, "SGD_BLOCK_BYTES", 1)  # _block_rows' floor: 64 rows
    ref = reference(X, y, W3, 4.2, "squared", 0.01, chunk_rows=50, batch_size=b)
    assert ref.lr_critical_ms is not None and ref.sgd is not None
    assert ref.lr_critical_ms == pytest.approx(whole.lr_critical_ms, rel=1e-12)  # blocks change round-off only

    def radius(eta: float) -> float:
        return float(np.abs(np.linalg.eigvals(dense_operator(A, b, eta))).max())

    H, G, p = A.T @ A / len(A), noise_moment(A, labels, theta), A.shape[1]
    low, high = 0.0, 1.01 * 2 / np.linalg.eigvalsh(H).max()  # past GD's edge, past SGD's
    assert radius(high) > 1
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if radius(middle) < 1 else (low, middle)
    assert ref.lr_critical_ms == pytest.approx(low, rel=1e-8)
    for fraction in (0.01, 0.3, 0.9, 0.99):
        eta = fraction * low
        stationary = np.linalg.solve(np.eye(p * p) - dense_operator(A, b, eta), (eta**2 / b * G).reshape(-1))
        want = 0.5 * np.trace(H @ stationary.reshape(p, p))
        assert ref.sgd.excess_loss(eta) == pytest.approx(want, rel=1e-8)


def test_the_seeds_data_edges() -> None:
    """The edges on the data of a default run (seed 0): GD's 1.86; SGD's 0.443, 1.46 and 1.82 at b = 1, 10, 100."""
    cfg = Config()
    data = generate_dataset(cfg)
    X, y = data.features, data.labels
    edges = [reference(X, y, [2.0, -3.4], 4.2, "squared", 0.03, batch_size=b).lr_critical_ms for b in (1, 10, 100)]
    assert reference(X, y, [2.0, -3.4], 4.2, "squared", 0.03).lr_critical_gd == pytest.approx(1.8564, abs=1e-4)
    assert edges == pytest.approx([0.4428, 1.4595, 1.8196], abs=1e-4)


def test_mse_is_squared_at_twice_the_step_with_twice_the_loss() -> None:
    X, y = data()
    squared = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.2, batch_size=10)
    mse = reference(X, y, [2.0, -3.4], 4.2, "mse", 0.1, batch_size=10)
    assert squared.lr_critical_ms is not None and squared.theory_excess_loss is not None
    assert mse.lr_critical_ms == pytest.approx(squared.lr_critical_ms / 2, rel=1e-12)
    assert mse.theory_excess_loss == pytest.approx(2 * squared.theory_excess_loss, rel=1e-12)


def sgd_excess(
    A: np.ndarray, labels: np.ndarray, theta: np.ndarray, b: int, eta: float, replicas: int, steps: int, seed: int
) -> np.ndarray:
    """SGD with replacement on ½(aᵀθ − y)², ``replicas`` runs from θ_ols at once: ½eᵀHe of each run, per step."""
    n = len(A)
    H = A.T @ A / n
    rng = np.random.default_rng(seed)
    params = np.tile(theta, (replicas, 1))
    excess = np.empty((steps, replicas))
    for t in range(steps):
        rows = rng.integers(0, n, size=(replicas, b))  # b draws with replacement per run
        batch = A[rows]  # (R, b, p)
        residuals = np.einsum("rbp,rp->rb", batch, params) - labels[rows]
        params -= eta / b * np.einsum("rbp,rb->rp", batch, residuals)
        error = params - theta
        excess[t] = 0.5 * np.einsum("rp,pq,rq->r", error, H, error)
    return excess


@pytest.mark.parametrize(("b", "eta"), [(1, 0.05), (1, 0.3), (10, 0.05), (10, 0.3)])
def test_theory_excess_loss_is_simulated_sgd_with_replacement(b: int, eta: float) -> None:
    X, y = data()
    A, labels, theta = design(X, y)
    theory = reference(X, y, [2.0, -3.4], 4.2, "squared", eta, batch_size=b).theory_excess_loss
    assert theory is not None
    burn_in, steps = int(20 / eta), 4000  # burn-in: ~20 relaxation times 1/(ηλ_min), λ_min ≈ 1
    per_run = sgd_excess(A, labels, theta, b, eta, 400, burn_in + steps, seed=b)[burn_in:].mean(0)
    measured, error = per_run.mean(), per_run.std(ddof=1) / np.sqrt(len(per_run))
    assert error < 0.015 * measured
    assert measured == pytest.approx(theory, rel=0.05)


@pytest.mark.parametrize(("b", "lr", "loss"), [(10, 0.3, "squared"), (1, 0.1, "squared"), (10, 0.15, "mse")])
def test_lrlab_runs_with_replacement_reach_theory_excess_loss(b: int, lr: float, loss: str) -> None:
    """The real reader and engine: the mean excess_loss of each run's last 80 epochs (after 20), 16 seeds."""
    measured, theory = [], []
    for seed in range(16):
        cfg = lrlab.compose(
            "dataset=noisy", "reader=with_replacement", "engine=compiled", f"batch_size={b}", f"lr={lr}",
            f"loss={loss}", "num_epochs=100", "theory_epochs=80", f"seed={seed}",
        )  # fmt: skip
        history = lrlab.train(cfg).history
        ref = closed_form(cfg, generate_dataset(cfg))
        assert ref.theory_excess_loss is not None
        metrics = stationary_excess_loss([r.excess_loss for r in history], 80, ref.theory_excess_loss)
        measured.append(metrics["measured_excess_loss"])
        theory.append(ref.theory_excess_loss)
        assert metrics["excess_loss_ratio"] == metrics["measured_excess_loss"] / ref.theory_excess_loss
    ratios = np.array(measured) / np.array(theory)
    assert ratios.std(ddof=1) / np.sqrt(len(ratios)) < 0.04
    assert np.mean(measured) / np.mean(theory) == pytest.approx(1, abs=0.10)


def perron(A: np.ndarray, b: int, eta: float) -> tuple[float, np.ndarray]:
    """ρ(T_η) and its PSD eigenvector (the worst second moment), from the dense operator."""
    p = A.shape[1]
    values, vectors = np.linalg.eig(dense_operator(A, b, eta))
    top = int(np.argmax(values.real))
    V = vectors[:, top].real.reshape(p, p)
    V = (V + V.T) / 2
    return float(values[top].real), V * np.sign(np.trace(V))


@pytest.mark.parametrize("b", [1, 10])
def test_the_mean_square_grows_just_above_the_edge_and_shrinks_just_below(b: int) -> None:
    X, y = data()
    A, _, _ = design(X, y)
    edge = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.1, batch_size=b).lr_critical_ms
    assert edge is not None
    horizon = 10 if b == 1 else 5
    for fraction in (0.9, 1.1):
        eta = fraction * edge
        rho, V = perron(A, b, eta)
        values, vectors = np.linalg.eigh(V)
        assert values.min() > 0
        rng = np.random.default_rng(b)
        errors = rng.standard_normal((20000, A.shape[1])) @ (vectors * np.sqrt(values)).T  # E[eeᵀ] = V
        start = np.mean(np.sum(errors**2, 1))
        growth = []
        for _ in range(horizon):  # noise-free: e' = (I − η/b Σ aaᵀ) e, b draws with replacement
            batch = A[rng.integers(0, len(A), size=(len(errors), b))]
            errors = errors - eta / b * np.einsum("rbp,rb->rp", batch, np.einsum("rbp,rp->rb", batch, errors))
            growth.append(np.mean(np.sum(errors**2, 1)) / start)
        assert np.array(growth[:3]) == pytest.approx(rho ** np.arange(1, 4), rel=0.10)
        if fraction > 1:
            assert rho > 1 and growth[-1] > 1.5 and growth[-1] > growth[horizon // 2 - 1] > 1
        else:
            assert rho < 1 and growth[-1] < 0.7


@pytest.mark.parametrize("b", [1, 10])
def test_just_below_the_edge_the_mean_excess_stays_bounded(b: int) -> None:
    X, y = data()
    A, labels, theta = design(X, y)
    ref = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.1, batch_size=b)
    assert ref.lr_critical_ms is not None and ref.sgd is not None
    eta = 0.9 * ref.lr_critical_ms
    theory = ref.sgd.excess_loss(eta)
    excess = sgd_excess(A, labels, theta, b, eta, 1000 if b == 1 else 300, 4000, seed=b).mean(1)
    windows = excess.reshape(8, 500).mean(1) / theory
    assert windows.min() > 0.6 and windows.max() < 1.5, windows


@pytest.mark.parametrize("loss", ["squared", "mse"])
@pytest.mark.parametrize("b", [1, 10])
def test_for_small_steps_the_floor_is_eta_tr_g_over_4b(loss: str, b: int) -> None:
    X, y = data()
    A, labels, theta = design(X, y)
    trace_g = np.trace(noise_moment(A, labels, theta))
    edge = reference(X, y, [2.0, -3.4], 4.2, loss, 0.1, batch_size=b).lr_critical_ms
    assert edge is not None
    lr = edge / 100
    floor = reference(X, y, [2.0, -3.4], 4.2, loss, lr, batch_size=b).theory_excess_loss
    eta = 2 * LOSS_SCALE[loss] * lr  # the step on ½(aᵀθ − y)²
    small = LOSS_SCALE[loss] * eta * trace_g / (2 * b)  # η tr(G)/(4b) under squared, twice under mse
    assert floor == pytest.approx(small, rel=0.05)
    assert floor != pytest.approx(small, rel=1e-4)  # a limit, not the formula


def variant(cfg: Config, optimizer: str, momentum: float = 0.0) -> Config:
    return dataclasses.replace(cfg, optimizer=OptimizerConfig(name=OptimizerName(optimizer), momentum=momentum))


def test_only_plain_sgd_gets_the_sgd_theory() -> None:
    cfg = Config(dataset=dataclasses.replace(Config().dataset, num_examples=200))
    runs = {
        "sgd_scratch": variant(cfg, "sgd_scratch"),
        "sgd": variant(cfg, "sgd"),
        "momentum": variant(cfg, "sgd", 0.9),
        "adam": variant(cfg, "adam"),
    }
    data = generate_dataset(cfg)
    for name, run in runs.items():
        metrics = closed_form(run, data).as_metrics()
        assert plain_sgd(run) is (name in ("sgd_scratch", "sgd"))
        assert all((key in metrics) is plain_sgd(run) for key in SGD_KEYS), name
        assert "lr_critical_gd" in metrics and "lr_ratio" in metrics


def test_past_the_edge_the_floor_is_not_logged() -> None:
    X, y = data(n=200)
    edge = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.1, batch_size=1).lr_critical_ms
    assert edge is not None
    metrics = reference(X, y, [2.0, -3.4], 4.2, "squared", 1.01 * edge, batch_size=1).as_metrics()
    assert "lr_critical_ms" in metrics and "theory_excess_loss" not in metrics


def test_a_rank_deficient_fit_gets_no_sgd_theory() -> None:
    X, y = data(n=2)
    ref = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.1, batch_size=1)
    assert ref.ols_note and not set(SGD_KEYS) & set(ref.as_metrics())


def test_a_vectorized_group_gets_each_members_own_references() -> None:
    """Members of one group (lr and momentum differ) get what one run of each gets, bit for bit."""
    base = Config(dataset=dataclasses.replace(Config().dataset, num_examples=300), num_epochs=1)
    cfgs = [variant(dataclasses.replace(base, lr=lr), "sgd", m) for lr, m in [(0.9, 0.9), (0.03, 0), (0.3, 0)]]
    got: dict[int, dict[str, float]] = {}

    def member(index: int, cfg: Config) -> Member:
        return Member(cfg, lambda ref: got.__setitem__(index, ref.as_metrics()), lambda _: None, lambda _: None)

    train_group([member(i, cfg) for i, cfg in enumerate(cfgs)], lambda: False)
    data = generate_dataset(base)
    for index, cfg in enumerate(cfgs):
        assert got[index] == closed_form(cfg, data).as_metrics()
    assert "theory_excess_loss" not in got[0] and "theory_excess_loss" in got[2]


def test_the_sgd_references_are_bit_reproducible_across_processes_and_blas_threads() -> None:
    """numpy's BLAS computes the SGD theory: the same bits in another process, on one BLAS thread or several."""
    code = (
        "import torch; from lrlab.core.theory import reference; g = torch.Generator().manual_seed(0); "
        "X, y = torch.randn(20000, 50, generator=g), torch.randn(20000, 1, generator=g); "
        "print([float.hex(v) for v in reference(X, y, [0.0] * 50, 0.0, 'squared', 0.01, batch_size=7)"
        ".as_metrics().values()])"
    )
    generator = torch.Generator().manual_seed(0)
    X, y = torch.randn(20000, 50, generator=generator), torch.randn(20000, 1, generator=generator)
    metrics = reference(X, y, [0.0] * 50, 0.0, "squared", 0.01, batch_size=7).as_metrics()
    assert set(SGD_KEYS) <= set(metrics)
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert there.stdout.strip() == str([float.hex(v) for v in metrics.values()])


def test_the_subsample_of_rows_is_seeded_and_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SGD_ROWS rows M(Σ) averages over a fixed subsample: the same numbers every time, near all rows'."""
    import lrlab.core.theory as theory

    X, y = data(n=4000, noise=1.0)
    full = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.1, batch_size=1)
    monkeypatch.setattr(theory, "SGD_ROWS", 1000)
    sampled = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.1, batch_size=1)
    assert sampled.as_metrics() == reference(X, y, [2.0, -3.4], 4.2, "squared", 0.1, batch_size=1).as_metrics()
    assert sampled.lr_critical_ms != full.lr_critical_ms
    assert sampled.lr_critical_ms == pytest.approx(full.lr_critical_ms, rel=0.05)
    assert sampled.theory_excess_loss == pytest.approx(full.theory_excess_loss, rel=0.05)


def test_stationary_excess_loss_averages_the_last_epochs() -> None:
    assert stationary_excess_loss([4.0, 1.0, 2.0, 3.0], 0, 1.0) == {}
    assert stationary_excess_loss([4.0, 1.0, 2.0, 3.0], 3, 4.0) == {
        "measured_excess_loss": 2.0,
        "excess_loss_ratio": 0.5,
    }
    assert stationary_excess_loss([4.0, 1.0], 2, None) == {"measured_excess_loss": 2.5}


def test_theory_epochs_is_at_most_num_epochs() -> None:
    with pytest.raises(ConfigError, match=r"^theory_epochs=4 is not allowed: theory_epochs must be an integer in"):
        Config(num_epochs=3, theory_epochs=4)
    with pytest.raises(ConfigError, match=r"^theory_epochs=-1 is not allowed"):
        Config(theory_epochs=-1)
    assert "theory_epochs" not in Config().identity() and Config(theory_epochs=2).identity()["theory_epochs"] == 2


@pytest.mark.parametrize("optimizer", ["sgd_scratch", "momentum"])
def test_a_tracked_run_logs_the_measured_floor_beside_the_theory(tracking_uri: str, optimizer: str) -> None:
    cfg = lrlab.compose(
        f"optimizer={optimizer}", "dataset=noisy", "reader=with_replacement", "lr=0.1", "num_epochs=4",
        "theory_epochs=2", "dataset.num_examples=200",
    )  # fmt: skip
    run_id = lrlab.track(cfg, tracking_uri).run_id
    metrics = MlflowClient(tracking_uri).get_run(run_id).data.metrics
    assert "measured_excess_loss" in metrics and "lr_critical_gd" in metrics
    if optimizer == "momentum":
        assert not {*SGD_KEYS, "excess_loss_ratio"} & set(metrics)
    else:
        assert metrics["excess_loss_ratio"] == pytest.approx(
            metrics["measured_excess_loss"] / metrics["theory_excess_loss"], rel=1e-12
        )
        assert metrics["lr_critical_ms"] < metrics["lr_critical_gd"]


def test_the_reader_option_with_replacement_composes() -> None:
    cfg = lrlab.compose("reader=with_replacement")
    assert cfg.reader == ReaderConfig(name=ReaderName.with_replacement)


@pytest.mark.parametrize(("start", "total"), [(0, 200), (100, 200), (0, 1), (7, 8)])
def test_the_averaged_transient_is_the_mean_of_gradient_descents_iterates(start: int, total: int) -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(50, 3))
    hessian, error, lr = rows.T @ rows / 50, rng.normal(size=3), 0.07
    iterate, kept = error.copy(), []
    for step in range(total):  # the loop: e ← (I − lr·H) e, the iterates after steps start … total−1 averaged
        iterate = iterate - lr * hessian @ iterate
        if step >= start:
            kept.append(iterate.copy())
    got = averaged_transient(hessian, error, lr, start, total)
    np.testing.assert_allclose(got, np.mean(kept, axis=0), rtol=1e-12, atol=1e-15)
