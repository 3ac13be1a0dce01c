"""The vectorized path in one process: K models trained as one batched computation (``lrlab/core/batched.py``)
against one run of the same size on the same device, with no MLflow and no CLI (docs/benchmarks.md). The 256 jobs
share their data and its order (``data_seed=0 shuffle_seed=0``), so that all of them are one group."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

from lrlab.api import compose
from lrlab.core.batched import train_together
from lrlab.core.config import Config
from lrlab.core.engines.results import TrainResult
from lrlab.core.pipeline import run_pipeline
from lrlab.tools.benchmarks import processes

LRS = [0.005 * 1.25**k for k in range(16)]  # 0.005 .. 0.14: all stable at batch 10 (as processes.SIXTEEN_LRS)


def configs(count: int, common: tuple[str, ...]) -> list[Config]:
    """``count`` (16 or 256) jobs of one group: 16 lrs, times 16 init seeds for 256."""
    seeds = range(16) if count > len(LRS) else range(1)
    return [
        compose(*common, f"lr={lr:.4g}", f"init_seed={seed}", "data_seed=0", "shuffle_seed=0")
        for seed in seeds
        for lr in LRS
    ][:count]


def train_members(cfgs: list[Config]) -> list[TrainResult | BaseException]:
    """Train ``cfgs`` as one group, as the vectorized launcher does; every member's outcome."""
    return [outcome for _, outcome in train_together(cfgs)]


def _synchronized(work: Callable[[], object], device: str) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        work()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return timed


def rows(
    device: str, engine: str, size: int, batch_size: int, counts: tuple[int, ...], repeats: int
) -> list[tuple[str, str, str, str]]:
    """(case, measured, reference, ratio) for ``counts`` jobs against one run, each on ``device``."""
    common = (f"dataset.num_examples={size}", f"batch_size={batch_size}", f"engine={engine}", f"device={device}")
    one = compose(*common, f"lr={LRS[0]:.4g}")
    groups = {count: configs(count, common) for count in counts}
    # Each contender's untimed first run (CUDA's context and kernels, numba's cache), which for a group also
    # checks that every member trains to the end: a fair count of model-samples.
    run_pipeline(one)
    for count, cfgs in groups.items():
        failed = [o for o in train_members(cfgs) if not isinstance(o, TrainResult)]
        if failed:
            raise RuntimeError(f"{len(failed)} of {count} members did not finish: {failed[0]!r}")
    contenders = {"one": _synchronized(lambda: run_pipeline(one), device)}
    contenders |= {str(count): _synchronized(partial(train_members, cfgs), device) for count, cfgs in groups.items()}
    times = processes.medians(contenders, repeats)
    samples = one.num_epochs * size
    out = []
    for count in counts:
        seconds = times[str(count)]
        out.append(
            (
                f"{count} jobs, one batched group, {engine} on {device}, n={size}, batch {one.batch_size}",
                f"{seconds:.3f} s ({count * samples / seconds:,.0f} model-samples/s)",
                f"one run, {engine} on {device}: {times['one']:.3f} s ({samples / times['one']:,.0f} samples/s)",
                f"{seconds / times['one']:.2f}×",
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lrlab.tools.benchmarks.vectorized", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--engine", help="default: compiled on the CPU, autograd elsewhere")
    parser.add_argument("--size", type=int, default=100_000, help="examples (default 100000)")
    parser.add_argument("--batch-sizes", default="10", help="comma-separated (default 10)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    engine = args.engine or ("compiled" if args.device == "cpu" else "autograd")
    if args.device == "cuda":
        print(f"- GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("| case | measured | reference (same run) | ratio |\n|---|---|---|---|")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        for row in rows(args.device, engine, args.size, batch_size, (16, 256), args.repeats):
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
