"""``python -m lrlab.tools.bench --quick``: every case prints a row with a ratio or an explicit "not available".

A smoke test of the benchmark's code paths at tiny sizes, never of its numbers: the speed cases run in its
process; the subprocess cases (CLI processes of about 5 s of CPU each) say that ``--quick`` skips them
(``make bench`` runs them).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    "seed §3.2: n=1000, d=2, batch 10: autograd",
    "seed §3.2: n=1000, d=2, batch 10: compiled",
    "seed §3.3: n=1000, d=2, batch 10: autograd",
    "seed §3.3: n=1000, d=2, batch 10: compiled",
    "d=2, batch 10: compiled",
    "d=2, batch 256: compiled",
    "d=100, batch 256: compiled",
    "canonical sweep",
    "one more job",
    "16 jobs, launcher=vectorized",
    "256 jobs, launcher=vectorized",
    "peak memory",
    "the record of one job",
    "steps 1-7 of a seed-sized job",
    "256 jobs' records alone",
    "16 jobs, one batched group, compiled on cpu",
    "SGD's theory (lr_critical_ms, theory_excess_loss)",
]
RATIO = re.compile(r"\| -?\d[\d,]*(\.\d+)?× ")


@pytest.mark.soak_only  # make soak only: a smoke test of make bench's tool, not of lrlab
@pytest.mark.e2e
def test_quick_bench_prints_every_case_and_writes_the_tables(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", "lrlab.tools.bench", "--quick", "--output", str(output)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    for case in CASES:
        matching = [row for row in rows if case in row]
        assert matching, f"no row for {case!r} in:\n{done.stdout}"
        for row in matching:
            assert RATIO.search(row) or "not available" in row or "skipped under --quick" in row, row
    speed = [row for row in rows if "seed §3.2" in row or "batch 256" in row]
    assert speed and all(RATIO.search(row) for row in speed)  # the in-process cases always run
    written = output.read_text()
    assert all(row in written for row in rows)
    assert "## Machine" in written and "torch" in written and "numba" in written
    assert not (tmp_path / "mlflow.db").exists()  # the sweeps' stores are temporary
