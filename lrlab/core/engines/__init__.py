"""Step 7's engines: one module per ``EngineName``, each with a ``train(problem: Problem) -> TrainResult`` function
(docs/architecture.md#where-a-new-x-goes). A module is imported only when a run uses it, so that a default run never
loads numba."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lrlab.core.config import EngineName
    from lrlab.core.engines.results import Problem, TrainResult

Engine = Callable[["Problem"], "TrainResult"]


def load(name: EngineName) -> Engine:
    """The ``train`` function of the engine ``name``, imported on first use."""
    train: Engine = importlib.import_module(f"{__name__}.{name.value}").train
    return train
