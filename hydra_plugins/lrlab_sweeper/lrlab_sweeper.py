"""The Hydra side of ``hydra/sweeper=lrlab``, lrlab's default sweeper: Hydra's basic sweeper, whose jobs are
composed once (``lrlab.sweep.jobloader.JobLoader``).

Hydra's basic sweeper composes every job to check it before launching, and its launcher composes each job
again: about 0.3 s a job. This sweeper hands the launcher a loader that composes once per set of jobs that
differ only in plain values, and checks only the jobs that lrlab's sweep callback has not already composed
through that loader. It expands and orders the jobs exactly as the basic sweeper does. Hydra imports this
module at every start: it imports only lrlab's wrapper of Hydra's own sweeper until a sweep starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # see lrlab/sweep/hydra_internals.py
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class LrlabSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from lrlab.sweep.jobloader import JobLoader

        loader = JobLoader.of(hydra_context.config_loader)
        context = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from lrlab.sweep.jobloader import JobLoader

        assert self.hydra_context is not None
        loader = self.hydra_context.config_loader
        assert isinstance(loader, JobLoader)
        unchecked = [job for job in batch if tuple(job) not in loader.loaded]
        if unchecked:
            super().validate_batch_is_legal(unchecked)
