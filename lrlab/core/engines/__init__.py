"""Step 7's engines: what runs the training loop. One module per ``EngineName``, one YAML in ``conf/engine/``.

An engine is a module with a ``train(problem: Problem) -> TrainResult`` function: it trains the products of
steps 1-6, reports every epoch through ``problem.on_epoch`` and raises ``Diverged`` and ``Stopped`` as
``lrlab/core/engines/results.py`` defines them. A module is imported only when a run uses it, so that a default
run never loads numba.

A new engine is a module here (named as its ``EngineName`` member), a member of ``EngineName`` in
``lrlab/core/config.py`` and ``conf/engine/<name>.yaml``.
"""

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
