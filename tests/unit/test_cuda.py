"""CUDA: one run and the vectorized path (lrlab.core.batched's torch ops) on a GPU. Skipped where there is none.

On the CPU a batched member's history equals its run alone bit for bit (test_batched.py). On a GPU the
run alone multiplies through cuBLAS, which sums in its own order, while the batched path multiplies
element-wise: the two agree to float32 round-off, and this file states the tolerance, ``RTOL``.

Self-contained (``lrlab.compose``, no fixtures), so that it also runs with ``--noconftest`` on a machine
that has a GPU and torch but not MLflow.
"""

from __future__ import annotations

import math

import pytest
import torch

from lrlab.api import compose
from lrlab.core.batched import train_together
from lrlab.core.engines.results import Diverged, EpochResult, TrainResult
from lrlab.core.pipeline import run_pipeline

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
RTOL = 1e-5  # relative, on train_loss and on the final w and b (float32 round-off, summed in other orders)
COMMON = ("device=cuda", "data_seed=5", "shuffle_seed=6", "dataset.num_examples=1003")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-7)


def test_a_run_on_cuda_trains_on_the_gpu_and_agrees_with_the_cpu() -> None:
    gpu = run_pipeline(compose(*COMMON))
    cpu = run_pipeline(compose(*COMMON[1:], "device=cpu"))
    assert gpu.device.startswith("cuda")
    for g, c in zip(gpu.history, cpu.history, strict=True):
        assert _close(g.train_loss, c.train_loss), (g, c)
    assert all(_close(g, c) for g, c in zip([*gpu.w, gpu.b], [*cpu.w, cpu.b], strict=True))


@pytest.mark.parametrize("optimizer", ["sgd_scratch", "sgd"])
def test_every_batched_member_on_cuda_matches_its_run_alone(optimizer: str) -> None:
    owns = [("lr=0.03",), ("lr=0.1", "init_seed=1"), ("model.init_std=0.5",), ("lr=5",)]  # lr=5 diverges
    cfgs = [compose(*COMMON, f"optimizer={optimizer}", *own) for own in owns]
    together = train_together(cfgs)
    for i, cfg in enumerate(cfgs):
        alone: list[EpochResult] = []
        try:
            result = run_pipeline(cfg, alone.append)
        except Diverged:
            assert isinstance(together[i][1], Diverged), owns[i]
            assert len(together[i][0]) == len(alone), owns[i]
            continue
        history, batched = together[i]
        assert isinstance(batched, TrainResult), owns[i]
        assert len(history) == len(alone) == cfg.num_epochs
        for a, b in zip(history, alone, strict=True):
            assert _close(a.train_loss, b.train_loss), (owns[i], a, b)
        assert all(_close(x, y) for x, y in zip([*batched.w, batched.b], [*result.w, result.b], strict=True)), owns[i]
