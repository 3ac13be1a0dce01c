"""The closed-form references against independent computations and against gradient descent itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lrlab.core.data import synthetic_data
from lrlab.core.theory import CHUNK_ROWS, normal_equations, reference


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
    lr_critical_gd = reference(X, y, [2.0, -3.4], 4.2, loss, 1.0).lr_critical_gd
    scale = 0.5 if loss == "squared" else 1.0
    A = torch.cat([X, torch.ones(len(X), 1)], 1).double()
    for factor, grows in [(0.95, False), (1.05, True)]:
        theta = torch.zeros(3, 1, dtype=torch.float64)
        for _ in range(400):
            theta -= factor * lr_critical_gd * 2 * scale * A.T @ (A @ theta - y.double()) / len(A)
        assert (float(theta.abs().max()) > 1e3) is grows


def test_references_are_bit_reproducible() -> None:
    X, y = data(2000)
    first = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.03)
    again = reference(X.clone(), y.clone(), [2.0, -3.4], 4.2, "squared", 0.03)
    assert first == again


W20 = [2.0, -3.4, 1.5, 0.5, -1.0, 3.0, -2.5, 0.8, -0.3, 1.2, -1.7, 2.2, 0.1, -0.9, 1.8, -2.0, 0.6, -0.4, 2.7, -1.1]


# The references of the one-shot formula (A whole in float64), as lrlab computed them before the chunking, on the
# data synthetic_data(w, 4.2, n, 0.01, seed 0). Sizes whose reductions torch runs on one thread (at most 32768
# elements), so that the bits do not depend on the machine's core count.
ONE_SHOT = [
    ([2.0, -3.4], 1000, "squared", ["0x1.8427b4238c28bp-15", "0x1.3cc4622539eedp-12", "0x1.2201d5a334000p-12",
                                    "0x1.d0b393a75788dp+0", "0x1.0ec62b065084bp-6"]),
    ([2.0, -3.4], 10000, "mse", ["0x1.9e1d7221d6e8bp-14", "0x1.0a97a310597b6p-15", "0x1.ca618d32d0000p-13",
                                 "0x1.f243a6f9d74c4p-1", "0x1.f911df453e17cp-6"]),
    (W20, 1000, "squared", ["0x1.8e96e5f45adb2p-15", "0x1.7d45e760e0fa0p-10", "0x1.6e224de600000p-13",
                            "0x1.969e0a0a138d6p+0", "0x1.3574124087b31p-6"]),
]  # fmt: skip


@pytest.mark.parametrize(("true_w", "n", "loss", "expected"), ONE_SHOT)
def test_up_to_one_chunk_the_references_are_the_one_shot_formulas_bits(
    true_w: list[float], n: int, loss: str, expected: list[str]
) -> None:
    assert n <= CHUNK_ROWS
    X, y = synthetic_data(torch.tensor(true_w), 4.2, n, 0.01, torch.Generator().manual_seed(0))
    metrics = reference(X, y, true_w, 4.2, loss, 0.03).as_metrics()
    assert [float.hex(v) for v in metrics.values()] == expected


def test_chunked_normal_equations_agree_with_one_shot_to_float64_round_off() -> None:
    X, y = data(5000, noise=1.0)
    gram, moments = normal_equations(X, y, chunk_rows=len(X))  # one chunk: the one-shot formula
    A = torch.cat([X, torch.ones(len(X), 1)], 1).double()
    assert torch.allclose(gram, A.T @ A, rtol=1e-12, atol=0)
    assert torch.allclose(moments, A.T @ y.double().reshape(-1), rtol=1e-12, atol=0)
    for chunk_rows in (1, 7, 1000, 4999):
        chunked_gram, chunked_moments = normal_equations(X, y, chunk_rows)
        assert torch.allclose(chunked_gram, gram, rtol=1e-12, atol=0)
        assert torch.allclose(chunked_moments, moments, rtol=1e-12, atol=0)


@pytest.mark.parametrize("loss", ["squared", "mse"])
def test_chunked_references_agree_with_one_shot(loss: str) -> None:
    X, y = data(5000, noise=1.0)
    one_shot = reference(X, y, [2.0, -3.4], 4.2, loss, 0.03, chunk_rows=len(X))
    assert reference(X, y, [2.0, -3.4], 4.2, loss, 0.03, chunk_rows=2 * len(X)) == one_shot  # one chunk either way
    chunked = reference(X, y, [2.0, -3.4], 4.2, loss, 0.03, chunk_rows=333)
    for key in ("ols_train_loss", "lr_critical_gd", "lr_ratio"):
        assert getattr(chunked, key) == pytest.approx(getattr(one_shot, key), rel=1e-12, abs=0)
    # Errors of an estimate near true_w: a difference of numbers ~4, so agreement is absolute, not relative.
    for key in ("ols_w_error", "ols_b_error"):
        assert getattr(chunked, key) == pytest.approx(getattr(one_shot, key), rel=0, abs=1e-12)


def test_chunked_references_are_bit_reproducible_across_processes() -> None:
    code = (
        "import torch; from lrlab.core.data import synthetic_data; from lrlab.core.theory import reference; "
        "X, y = synthetic_data(torch.tensor([2.0, -3.4]), 4.2, 3000, 0.1, torch.Generator().manual_seed(0)); "
        "print([float.hex(v) for v in reference(X, y, [2.0, -3.4], 4.2, 'squared', 0.03, chunk_rows=256)"
        ".as_metrics().values()])"
    )
    X, y = data(3000)
    metrics = reference(X, y, [2.0, -3.4], 4.2, "squared", 0.03, chunk_rows=256).as_metrics()
    here = [float.hex(v) for v in metrics.values()]
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert there.strip() == str(here)


@pytest.mark.parametrize(("n", "d"), [(1000, 150), (1000, 128), (33000, 64)])
def test_the_gram_matrix_is_the_per_column_formulas_bits(n: int, d: int) -> None:
    """Blocks of columns (one of them with a remainder row) give the per-column formula's bits, also where
    torch sums on several threads (more than 32768 elements)."""
    generator = torch.Generator().manual_seed(1)
    X, y = torch.randn(n, d, generator=generator), torch.randn(n, 1, generator=generator)
    columns = torch.cat([X.double(), torch.ones(n, 1, dtype=torch.float64)], 1).T.contiguous()
    per_column = torch.stack([(columns * column).sum(1) for column in columns])
    assert torch.equal(normal_equations(X, y)[0], per_column)


# Run in a fresh process: the peak RSS of this one is the whole session's. The child caps its address space so
# that a reference that does not fit fails here rather than taking the machine's memory.
MEMORY_PROBE = """
import json, resource, sys
import torch
from lrlab.core.theory import reference
n, d = int(sys.argv[1]), int(sys.argv[2])
reference(torch.randn(64, 3), torch.randn(64, 1), [0.0] * 3, 0.0, "squared", 0.03)  # loads LAPACK, starts threads
generator = torch.Generator().manual_seed(0)
X, y = torch.randn(n, d, generator=generator), torch.randn(n, 1, generator=generator)
with open("/proc/self/statm") as statm:
    address_space = int(statm.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (address_space + (4 << 30), resource.RLIM_INFINITY))
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
reference(X, y, [0.0] * d, 0.0, "squared", 0.03)
print(json.dumps({"increase": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) * 1024}))
"""


@pytest.mark.parametrize("d", [pytest.param(600, marks=pytest.mark.soak_only), 1400])  # make soak adds d=600
def test_the_reference_costs_a_few_times_the_data_at_any_number_of_features(d: int) -> None:
    n = 2000
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(n), str(d)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    increase = json.loads(done.stdout)["increase"]
    data = n * (d + 1) * 4  # X and y in float32
    # The (d+1)² float64 results themselves: AᵀA and what LAPACK makes of it (rank, solve, eigenvalues).
    gram = (d + 1) ** 2 * 8
    assert increase < 10 * data + 8 * gram, f"peak RSS grew {increase / 1e6:.0f} MB for {data / 1e6:.1f} MB of data"
