"""``make bench``: lrlab against the seed's own loops, and what a run and a sweep cost.

Each case and how it is measured: docs/benchmarks.md. A case that fails prints its error in its row and the others
go on: nothing here fails on a number. The line above is ``--help``'s description."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil
import torch

from lrlab.tools.benchmarks import processes, record, speed, theory, vectorized


@dataclass
class Row:
    case: str
    measured: str  # what lrlab did
    reference: str  # what it is compared with, measured in this run
    ratio: str  # measured / reference (or the error)
    target: str = ""  # the target, where one is set
    verdict: str = ""  # "met", "not met", or empty


def _verdict(value: float, limit: float, at_least: bool) -> str:
    return "met" if (value >= limit if at_least else value <= limit) else "not met"


def _rate(samples_per_second: float) -> str:
    return f"{samples_per_second:,.0f}/s"


def speed_rows(quick: bool, repeats: int, seconds: float) -> list[Row]:
    rows = []
    for case in speed.cases(quick):
        loop = "§3.2 loop" if case.reference == "scratch" else "§3.3 loop"
        try:
            result = speed.measure(case, repeats, seconds)
        except Exception as error:  # report and go on
            rows.append(Row(case.name, "", f"seed {loop}", f"error: {_error_line(error)}"))
            continue
        for engine, rate in (("autograd", result.autograd), ("compiled", result.compiled)):
            ratio = rate / result.reference
            target = case.target if engine == "compiled" else None
            rows.append(
                Row(
                    f"{case.name}: {engine}",
                    _rate(rate),
                    f"seed {loop} {_rate(result.reference)}",
                    f"{ratio:.1f}×",
                    f"≥ {target:g}×" if target else "",
                    _verdict(ratio, target, at_least=True) if target else "",
                )
            )
    return rows


def _error_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:240]


def _guarded(case: str, reference: str, measure: Callable[[], Row]) -> Row:
    try:
        return measure()
    except Exception as error:  # report and go on
        return Row(case, "", reference, f"error: {_error_line(error)}")


def _canonical(repeats: int) -> tuple[Row, float]:
    """The canonical sweep against its floor; also returns the sweep's seconds."""
    times = processes.medians({"sweep": processes.sweep(*processes.CANONICAL), "floor": processes.floor()}, repeats)
    ratio = times["sweep"] / times["floor"]
    return (
        Row(
            "canonical sweep (make sweep: 3 jobs)",
            f"{times['sweep']:.2f} s",
            f"floor: imports + fresh store {times['floor']:.2f} s",
            f"{ratio:.2f}×",
            "≤ 1.3×",
            _verdict(ratio, 1.3, at_least=False),
        ),
        times["sweep"],
    )


def _marginal_job(repeats: int, jobs: int, *overrides: str) -> Row:
    """(t_jobs − t_1)/(jobs − 1) of basic-launcher sweeps at the seed's size, with ``overrides`` (medians of
    ``repeats`` turns)."""
    contenders = {
        "one": processes.sweep("lr=0.03", *overrides),
        "many": processes.sweep(processes.NINE_LRS, *overrides),
    }
    times = processes.medians(contenders, repeats)
    per_job = (times["many"] - times["one"]) / (jobs - 1)
    engine = " ".join(overrides) or "engine=autograd (the default)"
    return Row(
        f"one more job (basic launcher, {engine}): (t{jobs} − t1)/{jobs - 1}",
        f"{per_job * 1000:.0f} ms/job",
        f"the 1-job sweep {times['one']:.2f} s",
        f"{per_job / times['one']:.3f}× a 1-job sweep",
        "≤ 100 ms",
        _verdict(per_job, 0.1, at_least=False),
    )


ONE_RUN: dict[int, float] = {}  # size -> seconds of one engine=compiled run, as the vectorized cases measured it


def _vectorized(repeats: int, count: int, size: int) -> Row:
    """``count`` jobs (16 lrs, times 16 seeds for 256) through ``launcher=vectorized`` against one run."""
    name, ref = f"{count} jobs, launcher=vectorized, n={size}", f"one engine=compiled run, n={size}"
    seeds = ("seed=range(0,16)",) if count == 256 else ()
    common = (f"dataset.num_examples={size}", "engine=compiled")
    contenders = {
        "jobs": processes.sweep("launcher=vectorized", processes.SIXTEEN_LRS, *seeds, *common),
        "one": processes.single(*common),
    }
    times = processes.medians(contenders, repeats)
    ONE_RUN[size] = times["one"]
    ratio, target = times["jobs"] / times["one"], 1.5 if count == 16 else 3.0
    return Row(
        name,
        f"{times['jobs']:.2f} s",
        f"{ref} {times['one']:.2f} s",
        f"{ratio:.2f}×",
        f"≤ {target:g}×",
        _verdict(ratio, target, at_least=False),
    )


def _memory(num_examples: int) -> Row:
    """Peak memory of a run of ``num_examples`` above a seed-sized run, each a fresh process."""
    seed_peak, big_peak = processes.peak_memory(1000), processes.peak_memory(num_examples)
    dataset = num_examples * 3 * 4  # float32 features (n, 2) and labels (n, 1)
    ratio = (big_peak - seed_peak) / dataset
    mib = 2**20
    return Row(
        f"peak memory, n={num_examples:.0e}, d=2, compiled, 1 epoch",
        f"{(big_peak - seed_peak) / mib:.0f} MiB above a seed run ({big_peak / mib:.0f} vs {seed_peak / mib:.0f})",
        f"float32 dataset n·(d+1)·4 = {dataset / mib:.0f} MiB",
        f"{ratio:.2f}×",
        "≤ 3×",
        _verdict(ratio, 3, at_least=False),
    )


QUICK_SKIP = "skipped under --quick (make bench runs it)"
CUDA_HEADING = "## CUDA: the vectorized path's batched torch ops on a GPU"


def batched_rows(device: str, quick: bool, repeats: int) -> list[Row]:
    """K jobs as one batched group against one run, in this process (``benchmarks/vectorized.py``)."""
    engine = "compiled" if device == "cpu" else "autograd"
    size, counts = (2_000, (16,)) if quick else (100_000, (16, 256))
    batch_sizes = (10,) if quick or device == "cpu" else (10, 256)
    out = []
    for batch_size in batch_sizes:
        case = f"jobs as one group, {engine} on {device}, batch {batch_size}"
        try:
            out += [Row(*row) for row in vectorized.rows(device, engine, size, batch_size, counts, repeats)]
        except Exception as error:  # report and go on
            out.append(Row(case, "", "one run", f"error: {_error_line(error)}"))
    return out


def kept_cuda_section(output: Path) -> list[str]:
    """The CUDA section of an earlier ``BENCHMARKS.md``, kept where this machine has no GPU to measure it."""
    if not output.exists():
        return []
    text = output.read_text()
    return text[text.index(CUDA_HEADING) :].rstrip().splitlines() if CUDA_HEADING in text else []


def process_rows(quick: bool, repeats: int) -> list[Row]:
    """The subprocess cases, each row an error of its own if it fails."""
    marginal = max(repeats, 5)  # a difference of two sweeps' times: more turns, for less noise
    cases: list[tuple[str, Callable[[], Row]]] = [
        ("canonical sweep (make sweep: 3 jobs)", lambda: _canonical(repeats)[0]),
        ("one more job (basic launcher)", lambda: _marginal_job(marginal, 9)),
        ("one more job (basic launcher, engine=compiled)", lambda: _marginal_job(marginal, 9, "engine=compiled")),
        ("16 jobs, launcher=vectorized", lambda: _vectorized(repeats, 16, 100_000)),
        ("256 jobs, launcher=vectorized", lambda: _vectorized(repeats, 256, 100_000)),
        ("peak memory", lambda: _memory(10**7)),
    ]
    if quick:  # a smoke test: each of these costs CLI processes
        return [Row(name, "", "", QUICK_SKIP) for name, _ in cases]
    return [_guarded(name, "", measure) for name, measure in cases]


FLOOR_HEADING = "## What one more job cannot avoid (in one process: its record, its training)"


def floor_rows(quick: bool, repeats: int) -> list[Row]:
    """A job's MLflow record and a seed-sized job's training (``benchmarks/record.py``), each against the targets:
    one more job at most 100 ms; 256 jobs in 3x one run."""
    budget = "one more job's target: 100 ms"
    try:
        seconds = record.record_seconds(8 if quick else 64)
        training = record.training_seconds(max(repeats, 5))
    except Exception as error:  # report and go on
        return [Row("the record of one job", "", budget, f"error: {_error_line(error)}")]
    size = 100_000
    one = ONE_RUN.get(size)
    return [
        Row(
            "the record of one job: lrlab's MLflow writes (SQLite) and the summary's read",
            f"{seconds * 1000:.0f} ms/job",
            budget,
            f"{seconds / 0.1:.2f}× the budget",
        ),
        Row(
            "steps 1-7 of a seed-sized job, engine=autograd (data, references, 3 epochs of the seed's loop)",
            f"{training * 1000:.0f} ms/job",
            budget,
            f"{training / 0.1:.2f}× the budget",
        ),
        Row(
            "256 jobs' records alone (256 × the first row)",
            f"{256 * seconds:.1f} s",
            f"one engine=compiled run, n={size} {one:.2f} s (the 256 row's reference)"
            if one
            else f"one engine=compiled run, n={size}: not available (the 256 row did not run)",
            f"{256 * seconds / one:.2f}× one run, of the 3× budget (the run itself is the other 1×)" if one else "",
        ),
    ]


THEORY_HEADING = "## SGD's theory beside the training (in one process)"


def theory_rows(quick: bool, repeats: int) -> list[Row]:
    """SGD's edge and noise floor against the run's own training (``benchmarks/theory.py``): target below 1x."""
    try:
        return [Row(*row) for row in theory.rows(quick, repeats)]
    except Exception as error:  # report and go on
        return [Row("SGD's theory", "", "the run's training", f"error: {_error_line(error)}")]


def machine() -> list[str]:
    """The machine and software the figures come from."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = models[0] if models else cpu
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("torch", "numba", "mlflow", "hydra-core"))
    return [
        f"- CPU: {cpu}; {os.cpu_count()} logical cores, {usable} usable, torch threads {torch.get_num_threads()}",
        f"- RAM: {psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}, {versions}",
        f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
    ]


def table(rows: list[Row]) -> list[str]:
    lines = ["| case | measured | reference (same run) | ratio | target | |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.case} | {r.measured} | {r.reference} | {r.ratio} | {r.target} | {r.verdict} |" for r in rows]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lrlab.tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke test in seconds")
    parser.add_argument("--repeats", type=int, help="timed runs per contender (median); default 3, 1 with --quick")
    parser.add_argument("--seconds", type=float, help="about how long each small timed run lasts (default 0.3)")
    parser.add_argument(
        "--output", type=Path, default=Path("BENCHMARKS.md"), help="where the tables go (default ./BENCHMARKS.md)"
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    seconds = args.seconds or (0.02 if args.quick else 0.3)
    about = machine()
    print("\n".join(about), flush=True)

    print("\nSpeed: samples/s against the seed's own loop on the same data", flush=True)
    speed_table = speed_rows(args.quick, repeats, seconds)
    print("\n".join(table(speed_table)), flush=True)
    print("\nSweeps and memory: wall time of fresh processes, peak resident memory", flush=True)
    process_table = process_rows(args.quick, repeats)
    print("\n".join(table(process_table)), flush=True)

    print("\nWhat one more job cannot avoid: its record and its training, in one process", flush=True)
    floor_table = floor_rows(args.quick, repeats)
    print("\n".join(table(floor_table)), flush=True)

    print("\nSGD's theory beside the training, in one process", flush=True)
    theory_table = theory_rows(args.quick, repeats)
    print("\n".join(table(theory_table)), flush=True)

    print("\nThe vectorized path in one process (no MLflow): K jobs as one batched group", flush=True)
    batched_table = batched_rows("cpu", args.quick, repeats)
    print("\n".join(table(batched_table)), flush=True)
    if torch.cuda.is_available():
        print(f"\nCUDA ({torch.cuda.get_device_name()})", flush=True)
        cuda_table = batched_rows("cuda", args.quick, repeats)
        print("\n".join(table(cuda_table)), flush=True)
        cuda_section = [
            CUDA_HEADING,
            "",
            f"Measured by this run on {torch.cuda.get_device_name()}.",
            "",
            *table(cuda_table),
        ]
    else:
        cuda_section = kept_cuda_section(args.output)
        print("\nno CUDA device here: the CUDA section of", args.output, "is kept" if cuda_section else "is absent")

    how = (
        "quick: tiny sizes, the numbers mean little"
        if args.quick
        else f"median of {repeats} runs each, {max(repeats, 5)} for the marginal job"
    )
    command = " ".join(["python -m lrlab.tools.bench", *(argv if argv is not None else sys.argv[1:])])
    text = [
        "# lrlab benchmarks",
        "",
        f"Written by `{command}` ({how}).",
        "Every ratio is against a reference measured in the same run on the same machine; only ratios mean",
        "anything across machines. How each figure is taken: `lrlab/tools/bench.py` and",
        "`lrlab/tools/benchmarks/`.",
        "",
        "## Machine",
        "",
        *about,
        "",
        "## Speed: samples/s against the seed's own loop on the same data",
        "",
        *table(speed_table),
        "",
        "## Sweeps and memory",
        "",
        *table(process_table),
        "",
        FLOOR_HEADING,
        "",
        *table(floor_table),
        "",
        THEORY_HEADING,
        "",
        *table(theory_table),
        "",
        "## The vectorized path in one process (no MLflow, no CLI)",
        "",
        *table(batched_table),
        "",
        *cuda_section,
        "",
    ]
    args.output.write_text("\n".join(text))
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        traceback.print_exc(limit=0)
        sys.exit(130)
