"""Step 7's engines: what runs the training loop. One module per engine, one YAML per engine in ``conf/engine/``.

An engine is a module with a ``train`` function of the ``Engine`` signature: it takes the products of steps
1-6 and returns a ``TrainResult``, reporting every epoch through ``on_epoch`` and raising ``Diverged`` and
``Stopped`` as ``lrlab/engines/results.py`` defines them. ``ENGINES`` names each engine with the devices it
runs on; a module is imported only when a run uses it, so that a default run never loads numba.

A new engine is a module here, a line in ``ENGINES`` and ``conf/engine/<name>.yaml`` with ``name: <name>``.
This file imports neither torch nor numba: the config's validation reads ``ENGINES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from lrlab.config import Config
    from lrlab.data import Reader
    from lrlab.engines.results import EpochResult, TrainResult
    from lrlab.losses import Loss
    from lrlab.models import LinReg
    from lrlab.optim import Update
    from lrlab.theory import Reference


@dataclass(frozen=True)
class EngineSpec:
    module: str  # the module whose ``train`` runs the loop
    devices: tuple[str, ...]  # the ``device`` options it runs on


DEFAULT_ENGINE = "autograd"
ENGINES = {
    # The seed's loop: the step-4 model, the step-5 loss, backward() and the step-6 update, one minibatch a step.
    "autograd": EngineSpec("lrlab.engines.autograd", devices=("cpu", "cuda", "mps", "auto")),
    # The same update as one numba kernel over many steps, in float32, on the CPU only. ``auto`` is refused
    # too: whether a config runs must not depend on the machine it is validated on.
    "compiled": EngineSpec("lrlab.engines.compiled", devices=("cpu",)),
}


class Engine(Protocol):
    def __call__(
        self,
        cfg: Config,
        net: LinReg,
        loss: Loss,
        optimizer: Update,
        reader: Reader,
        features: torch.Tensor,
        labels: torch.Tensor,
        ref: Reference,
        on_epoch: Callable[[EpochResult], None],
        should_stop: Callable[[], bool],
    ) -> TrainResult: ...


def load(name: str) -> Engine:
    """The ``train`` function of the engine ``name`` (one of ``ENGINES``), imported on first use."""
    train: Engine = importlib.import_module(ENGINES[name].module).train
    return train
