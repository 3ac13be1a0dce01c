"""lrlab: an experiment harness for SGD on linear regression (d2l §3.2 and §3.3).

The Python API (see ``lrlab.api``): ``lrlab.compose(*overrides) -> Config``, ``lrlab.train(cfg) -> TrainResult``
and ``lrlab.run(cfg) -> JobResult`` (a tracked MLflow run). They load on first use, so that the CLI, which
imports this package, stays quick.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "compose", "run", "train"]


def __getattr__(name: str) -> Any:
    if name in ("compose", "train", "run"):
        from lrlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'lrlab' has no attribute {name!r}")
