"""``python -m lrlab.bench`` (``make bench``): samples/s of ``engine=compiled`` against ``engine=autograd``.

For each setting, both engines train the same config in this process: one untimed run each first (torch
warms up; numba compiles the kernel, or loads it from its cache), then ``--repeats`` timed runs, the
engines taking turns so that a noisy neighbour slows both. Each run lasts about ``--seconds`` (the number
of epochs is scaled from the untimed run). The figure is the one a run logs, ``samples_per_second``:
examples consumed by updates per second of training, the per-epoch evaluation included. Printed: each
engine's median and the ratio compiled / autograd, the reference measured here and now; only the ratio
means anything across machines. Untracked: nothing goes to MLflow.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import statistics
import time

import torch

from lrlab.api import compose
from lrlab.config import Config, EngineConfig
from lrlab.pipeline import run_pipeline

SETTINGS = [
    ("seed: d=2, batch 10, n=1000", []),
    ("seed, optimizer=adam", ["optimizer=adam"]),
    ("seed, reader=dataloader", ["reader=dataloader"]),
    ("wide: d=20, batch 10, n=10000", ["dataset=wide"]),
    ("wide, batch 100", ["dataset=wide", "batch_size=100"]),
]


def _timed(cfg: Config, engine: str, num_epochs: int) -> tuple[float, float]:
    """(samples_per_second, wall seconds) of one untracked run."""
    start = time.perf_counter()
    result = run_pipeline(dataclasses.replace(cfg, engine=EngineConfig(name=engine), num_epochs=num_epochs))
    return result.samples_per_second, time.perf_counter() - start


def bench(overrides: list[str], repeats: int, seconds: float) -> tuple[float, float]:
    """Median samples/s of (autograd, compiled) for the config of ``overrides``."""
    cfg = compose(*overrides, "num_epochs=1")
    epochs = {}
    for engine in ("autograd", "compiled"):
        _timed(cfg, engine, 1)  # warm-up: compile, cache, first-touch
        rate, _ = _timed(cfg, engine, 1)
        epochs[engine] = max(1, math.ceil(seconds * rate / cfg.dataset.num_examples))
    rates: dict[str, list[float]] = {"autograd": [], "compiled": []}
    for _ in range(repeats):
        for engine in rates:
            rates[engine].append(_timed(cfg, engine, epochs[engine])[0])
    return statistics.median(rates["autograd"]), statistics.median(rates["compiled"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m lrlab.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per engine and setting (median)")
    parser.add_argument("--seconds", type=float, default=0.3, help="about how long each timed run lasts")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    start = time.perf_counter()
    _timed(compose("num_epochs=1"), "compiled", 1)
    first = time.perf_counter() - start
    print(f"first compiled run in this process: {first:.2f} s (numba's import, and its compile or cache load)")
    print(f"{'setting':32} {'autograd samples/s':>20} {'compiled samples/s':>20} {'compiled / autograd':>20}")
    for name, overrides in SETTINGS:
        autograd, compiled = bench(overrides, args.repeats, args.seconds)
        print(f"{name:32} {autograd:>20,.0f} {compiled:>20,.0f} {compiled / autograd:>19.1f}x", flush=True)


if __name__ == "__main__":
    main()
