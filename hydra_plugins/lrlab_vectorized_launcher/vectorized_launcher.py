"""The Hydra side of ``launcher=vectorized``: a thin ``Launcher`` that hands the jobs to ``lrlab.sweep.launchers``.

It lives here because Hydra 1.3 instantiates a launcher only from the ``hydra_plugins`` package. Hydra imports it
for every command: it imports nothing of lrlab, torch or MLflow until a sweep launches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class VectorizedLauncher(Launcher):
    """Trains the jobs that share their data and its order as one batched computation, each job its own run."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context  # the jobs run lrlab's runner, not task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lrlab.sweep.launchers.vectorized import launch

        assert self.config is not None and self.hydra_context is not None
        return launch(self.hydra_context, self.config, job_overrides, initial_job_idx)

    @staticmethod
    def refusal(cfg: Any) -> str | None:
        """Why this launcher cannot run the job ``cfg`` (a ``lrlab.core.config.Config``), in one line; None if it can.
        The sweep's callback asks before any run exists (lrlab/sweep/callback.py)."""
        from lrlab.sweep.launchers.support import unsupported

        return unsupported(cfg)
