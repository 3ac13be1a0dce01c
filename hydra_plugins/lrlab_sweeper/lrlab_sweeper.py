"""The Hydra side of ``hydra/sweeper=lrlab`` (docs/sweeps.md#each-job-composed-once): Hydra's basic sweeper, the same
jobs in the same order, whose launcher gets a ``JobLoader`` that composes each set of jobs once. Hydra imports this
module at every start: it imports nothing of lrlab until a sweep starts."""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # see lrlab/sweep/hydra_internals.py
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class LrlabSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from lrlab.sweep.jobloader import JobLoader

        context = HydraContext(config_loader=JobLoader(hydra_context.config_loader), callbacks=hydra_context.callbacks)
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing left to check: lrlab's sweep callback composed and validated every job of the sweep before
        its parent run started (``lrlab/sweep/callback.py``), and it cannot be removed."""
