"""Samples/s of the seed's own loop, lrlab ``engine=autograd`` and ``engine=compiled``, on the same data (step 1 of
lrlab's config), in this process. How each figure is taken: docs/benchmarks.md."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lrlab.api import compose
from lrlab.core.config import Config, EngineConfig, EngineName
from lrlab.core.pipeline import generate_dataset, run_pipeline
from lrlab.tools.benchmarks import seed

LARGE = 100_000  # examples from which a case times single epochs, without a warm-up run
WIDE_W = [2.0, -3.4] * 50  # true_w of the d = 100 case


@dataclass(frozen=True)
class SpeedCase:
    name: str
    reference: str  # "scratch" (§3.2) or "concise" (§3.3): the seed loop it is measured against
    overrides: tuple[str, ...]  # lrlab's config (the seed loop gets its data, batch_size, lr)
    target: float | None = None  # compiled / reference at least this, where a target is set


def cases(quick: bool) -> list[SpeedCase]:
    """The cases of the table; ``quick`` shrinks the large ones to seconds in all."""
    big, wide = (5_000, 2_000) if quick else (1_000_000, 100_000)
    wide_w = "[" + ",".join(str(v) for v in WIDE_W) + "]"
    return [
        SpeedCase("seed §3.2: n=1000, d=2, batch 10", "scratch", (), target=300),
        SpeedCase(
            "seed §3.3: n=1000, d=2, batch 10",
            "concise",
            ("model=linear", "loss=mse", "optimizer=sgd", "reader=dataloader"),
        ),
        SpeedCase(f"n={big:.0e}, d=2, batch 10", "scratch", (f"dataset.num_examples={big}",), target=300),
        SpeedCase(f"n={big:.0e}, d=2, batch 256", "scratch", (f"dataset.num_examples={big}", "batch_size=256")),
        SpeedCase(
            f"n={wide:.0e}, d=100, batch 256",
            "scratch",
            (f"dataset.num_examples={wide}", f"dataset.true_w={wide_w}", "batch_size=256"),
            target=12,
        ),
    ]


@dataclass
class SpeedResult:
    reference: float  # samples/s of the seed's loop
    autograd: float
    compiled: float


def _seed_loop(case: SpeedCase, cfg: Config, features: torch.Tensor, labels: torch.Tensor) -> Callable[[int], float]:
    loop = seed.train_scratch if case.reference == "scratch" else seed.train_concise

    def timed(num_epochs: int) -> float:
        start = time.perf_counter()
        loop(features, labels, cfg.batch_size, cfg.lr, num_epochs, report=lambda _: None)
        return num_epochs * len(features) / (time.perf_counter() - start)

    return timed


def _lrlab(cfg: Config, engine: str) -> Callable[[int], float]:
    def timed(num_epochs: int) -> float:
        run_cfg = dataclasses.replace(cfg, engine=EngineConfig(name=EngineName(engine)), num_epochs=num_epochs)
        return run_pipeline(run_cfg).samples_per_second

    return timed


def measure(case: SpeedCase, repeats: int, seconds: float) -> SpeedResult:
    """Median samples/s of the seed's loop and of both engines on ``case``."""
    cfg = compose(*case.overrides, "num_epochs=1")
    data = generate_dataset(cfg)  # the data lrlab's runs of this config train on
    features, labels = data.features, data.labels
    contenders = {
        "reference": _seed_loop(case, cfg, features, labels),
        "autograd": _lrlab(cfg, "autograd"),
        "compiled": _lrlab(cfg, "compiled"),
    }
    num_examples = len(features)
    epochs = dict.fromkeys(contenders, 1)
    if num_examples < LARGE:
        for name, timed in contenders.items():
            timed(1)  # warm-up: torch's first calls; numba's compile or cache load
            epochs[name] = max(1, math.ceil(seconds * timed(1) / num_examples))
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, timed in contenders.items():
            rates[name].append(timed(epochs[name]))
    return SpeedResult(*(statistics.median(rates[name]) for name in ("reference", "autograd", "compiled")))
