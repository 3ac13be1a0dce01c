"""lrlab: an experiment harness for SGD on linear regression (d2l §3.2 and §3.3).

The Python API (``lrlab/api.py``): ``lrlab.compose(*overrides) -> Config``, ``lrlab.train(cfg) -> TrainResult``
and ``lrlab.track(cfg) -> JobResult`` (a tracked MLflow run). ``lrlab.run`` is the CLI module
(``python -m lrlab.run``), never a function. The API loads on first use, so that the CLI stays quick.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "compose", "track", "train"]


def __getattr__(name: str) -> Any:
    if name in ("compose", "train", "track"):
        from lrlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'lrlab' has no attribute {name!r}")
