"""The cases measured in fresh subprocesses (docs/benchmarks.md): the real CLI into a fresh SQLite store in a
temporary folder, timed wall clock from process start to exit, the contenders taking turns."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CANONICAL = ("lr=0.01,0.03,0.1",)  # make sweep
NINE_LRS = "lr=0.005,0.01,0.02,0.03,0.05,0.07,0.1,0.15,0.2"
SIXTEEN_LRS = "lr=" + ",".join(f"{0.005 * 1.25**k:.4g}" for k in range(16))  # 0.005 .. 0.14
FLOOR = (
    "import sys, torch, mlflow, hydra, lrlab.sweep.job\n"
    "from lrlab.record.store import ensure_store\nensure_store(sys.argv[1])\n"
)


class Failed(RuntimeError):
    """A subprocess of the benchmark exited non-zero: its last line of output says why."""


def _run(args: list[str], folder: Path) -> float:
    """Wall seconds of ``python <args>`` in ``folder``, whose ``mlflow.db`` is the tracking store."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise Failed(f"python {' '.join(args)[:80]} exited {done.returncode}: {lines[-1][:200]}")
    return seconds


def _fresh(make_args: Callable[[Path], list[str]]) -> Callable[[], float]:
    """A contender: ``make_args(folder)`` run in a new temporary folder (a fresh store) each time."""

    def timed() -> float:
        with tempfile.TemporaryDirectory(prefix="lrlab-bench-") as tmp:
            return _run(make_args(Path(tmp)), Path(tmp))

    return timed


def sweep(*overrides: str) -> Callable[[], float]:
    """A multirun of the CLI into a fresh store."""
    return _fresh(lambda tmp: ["-m", "lrlab.run", "-m", *overrides, f"hydra.sweep.dir={tmp / 'multirun'}"])


def single(*overrides: str) -> Callable[[], float]:
    """One run of the CLI into a fresh store."""
    return _fresh(lambda tmp: ["-m", "lrlab.run", *overrides, f"hydra.run.dir={tmp / 'outputs'}"])


def floor() -> Callable[[], float]:
    """The imports of a sweep's process and a fresh store, nothing else."""
    return _fresh(lambda tmp: ["-c", FLOOR, f"sqlite:///{tmp / 'mlflow.db'}"])


def medians(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median wall seconds of each contender, taking turns ``repeats`` times."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, timed in contenders.items():
            times[name].append(timed())
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory(num_examples: int) -> int:
    """Peak resident bytes of a fresh process running ``lrlab.tools.benchmarks.memory`` on ``num_examples``."""
    done = subprocess.run(
        [sys.executable, "-m", "lrlab.tools.benchmarks.memory", str(num_examples)], capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise Failed(f"the memory run of n={num_examples} exited {done.returncode}: {lines[-1][:200]}")
    return int(done.stdout.strip().splitlines()[-1])
