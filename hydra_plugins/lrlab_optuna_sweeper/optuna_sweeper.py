"""The Hydra side of ``hydra/sweeper=optuna`` (docs/sweeps.md#an-optimising-sweep-hydrasweeperoptuna): a thin
``Sweeper`` that hands the search to ``lrlab.sweep.optuna_sweep``. Its settings are ``hydra.sweeper.*``
(conf/hydra/sweeper/optuna.yaml); the sweep's callback checks them and the space before any run exists.

It lives here because Hydra 1.3 instantiates a sweeper only from the ``hydra_plugins`` package. Hydra imports it for
every command: it imports nothing of lrlab, Optuna or MLflow until a sweep starts."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Asks Optuna for trials, launches them with the sweep's launcher, tells Optuna what each run came to."""

    def __init__(self, **settings: Any) -> None:
        # The settings are read from the sweep's config (hydra.sweeper), where the callback checked them.
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from lrlab.sweep.jobloader import JobLoader

        self.config = config
        self.hydra_context = HydraContext(
            config_loader=JobLoader(hydra_context.config_loader), callbacks=hydra_context.callbacks
        )
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=self.hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> Any:
        from lrlab.sweep.optuna_sweep import run_sweep

        assert self.config is not None and self.launcher is not None
        return run_sweep(self.launcher, self.config)
