"""SGD's theory against the training it sits beside: what a run of plain SGD spends on ``lr_critical_ms`` and
``theory_excess_loss`` (``SgdTheory`` in ``lrlab/core/theory.py``) against its own training with ``engine=compiled``,
in this process, on the same data (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from lrlab.api import compose
from lrlab.core.config import Config
from lrlab.core.pipeline import closed_form, generate_dataset, run_pipeline
from lrlab.core.theory import LOSS_SCALE, SgdTheory, normal_equations
from lrlab.tools.benchmarks import processes
from lrlab.tools.benchmarks.speed import WIDE_W

TARGET = 1.0  # the theory's seconds below this times the training's


def config(num_examples: int) -> Config:
    """A default run (plain SGD, batch 10, 3 epochs, lr 0.03) at d = 100 with ``engine=compiled``."""
    wide_w = "[" + ",".join(str(v) for v in WIDE_W) + "]"
    return compose(f"dataset.num_examples={num_examples}", f"dataset.true_w={wide_w}", "engine=compiled")


@dataclass(frozen=True)
class Times:
    theory: float  # median seconds of SGD's theory: SgdTheory.prepare, its edge and its floor at the run's lr
    references: float  # median seconds of all the run's closed-form references (closed_form), the theory included
    training: float  # median train_seconds of the run: step 7, its updates and per-epoch evaluation


def measure(cfg: Config, repeats: int) -> Times:
    """Median seconds of the three, taking turns ``repeats`` times after an untimed run of each.

    The theory is timed as ``reference`` runs it for a run of plain SGD, from AᵀA/n and the least-squares fit
    (which every run computes, plain SGD or not: they are in the references' time, not in the theory's)."""
    data = generate_dataset(cfg)
    features, labels = data.features, data.labels
    gram, moments = normal_equations(features, labels)
    theta = torch.linalg.solve(gram, moments)
    second_moment, scale = gram / len(features), LOSS_SCALE[cfg.loss.name.value]

    def theory() -> float:
        start = time.perf_counter()
        sgd = SgdTheory.prepare(features, labels, second_moment, theta, cfg.batch_size, scale)
        if sgd is None or sgd.lr_edge() is None or sgd.excess_loss(cfg.lr) is None:
            raise RuntimeError(f"no SGD theory at lr={cfg.lr}, batch_size={cfg.batch_size}")
        return time.perf_counter() - start

    def references() -> float:
        start = time.perf_counter()
        closed_form(cfg, data)
        return time.perf_counter() - start

    def training() -> float:
        return run_pipeline(cfg).train_seconds

    contenders = {"theory": theory, "references": references, "training": training}
    for timed in contenders.values():
        timed()  # numba's compile or cache load, torch's and BLAS's first calls
    times = processes.medians(contenders, repeats)
    return Times(times["theory"], times["references"], times["training"])


def rows(quick: bool, repeats: int) -> list[tuple[str, str, str, str, str, str]]:
    """(case, measured, reference, ratio, target, verdict): SGD's theory, then all the references, each against
    the run's training."""
    num_examples = 2_000 if quick else 100_000
    cfg = config(num_examples)
    times = measure(cfg, repeats)
    size = f"d=100, n={num_examples:.0e}, batch {cfg.batch_size}, lr {cfg.lr:g}"
    training = f"the run's training, engine=compiled, {cfg.num_epochs} epochs: {times.training:.3f} s"
    ratio = times.theory / times.training
    return [
        (
            f"SGD's theory (lr_critical_ms, theory_excess_loss), {size}",
            f"{times.theory:.3f} s",
            training,
            f"{ratio:.2f}×",
            f"< {TARGET:g}×",
            "met" if ratio < TARGET else "not met",
        ),
        (
            f"all the closed-form references (normal equations, OLS, GD's edge, SGD's theory), {size}",
            f"{times.references:.3f} s",
            training,
            f"{times.references / times.training:.2f}×",
            "",
            "",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lrlab.tools.benchmarks.theory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="n=2000: a smoke test")
    parser.add_argument("--repeats", type=int, default=3, help="timed turns per contender (median; default 3)")
    args = parser.parse_args(argv)
    print("| case | measured | reference (same run) | ratio | target | |\n|---|---|---|---|---|---|")
    for row in rows(args.quick, args.repeats):
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
