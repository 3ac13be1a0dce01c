"""``python -m lrlab.tools.benchmarks.memory N``: one untracked run (d=2, ``engine=compiled``, 1 epoch) of N examples
in this fresh process, then its peak resident memory in bytes, printed alone on the last line."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_bytes() -> int:
    """The peak resident memory of this process so far, in bytes."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, kB elsewhere


def main() -> None:
    num_examples = int(sys.argv[1])
    from lrlab.api import compose
    from lrlab.core.pipeline import run_pipeline

    run_pipeline(compose(f"dataset.num_examples={num_examples}", "engine=compiled", "num_epochs=1"))
    print(peak_bytes())


if __name__ == "__main__":
    main()
