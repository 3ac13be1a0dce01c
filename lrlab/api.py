"""The Python API, for notebooks and scripts: the same composition, pipeline and record as the CLI.

import lrlab
cfg = lrlab.compose("lr=0.1")            # validated, typed Config; bad input raises ConfigError
result = lrlab.train(cfg)                # the seven steps, untracked: a TrainResult
tracked = lrlab.track(cfg)               # a tracked MLflow run, recorded as the CLI records it
tracked.run_id, tracked.status, tracked.result.history[-1].train_loss
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lrlab.core.config import Config, ConfigError
from lrlab.core.pipeline import EpochResult, TrainResult, run_pipeline
from lrlab.record.store import bound_http_retries, check_store, resolve_tracking_uri
from lrlab.sweep import interrupt
from lrlab.sweep.compose import CONF_DIR, job_config, register_configs, to_config
from lrlab.sweep.console import user_error_line

if TYPE_CHECKING:
    from lrlab.sweep.job import JobResult

_COMPOSED = "_lrlab_composed"  # the Hydra composition behind a Config from compose(), which run() records


def compose(*overrides: str) -> Config:
    """Compose ``conf/config.yaml`` with command-line style overrides (``"lr=0.1"``, ``"model=linear"``) and
    validate it exactly as the CLI does. Bad input raises ``ConfigError`` with the CLI's one-line message."""
    register_configs()
    fresh = not GlobalHydra.instance().is_initialized()
    try:
        if fresh:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="lrlab"):
                dcfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
        else:  # inside a Hydra app already
            dcfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
        cfg = to_config(dcfg, dict(dcfg.hydra.runtime.choices))
    except Exception as error:
        reported = user_error_line(error)
        if reported is None:
            raise
        raise ConfigError(reported[0]) from None
    object.__setattr__(cfg, _COMPOSED, dcfg)
    return cfg


def composition(cfg: Config) -> DictConfig:
    """The Hydra composition behind ``cfg`` (from ``compose``), Hydra's node included: what a run records."""
    composed = getattr(cfg, _COMPOSED, None)
    if not isinstance(composed, DictConfig):
        raise TypeError("expected a Config made by lrlab.compose(...)")
    return composed


def train(cfg: Config, on_epoch: Callable[[EpochResult], None] | None = None) -> TrainResult:
    """Run the seven steps on ``cfg``, untracked; ``on_epoch`` gets each epoch's result as it ends."""
    return run_pipeline(cfg, on_epoch or (lambda _: None))


def track(cfg: Config, tracking_uri: str | None = None, experiment_name: str | None = None) -> JobResult:
    """A tracked run of ``cfg`` (from ``compose``), with the MLflow record a CLI run of the same overrides has.

    ``tracking_uri`` and ``experiment_name`` override the config's (default: $MLFLOW_TRACKING_URI, else
    ./mlflow.db, and ``lrlab``). Returns the run's id, status and ``TrainResult``. Ctrl-C during the run ends
    it KILLED and raises ``KeyboardInterrupt``; a job that crashes raises ``JobFailed``.
    """
    from lrlab.sweep.job import run_job  # MLflow: only a tracked run needs it

    dcfg = copy.deepcopy(composition(cfg))
    with open_dict(dcfg):
        if tracking_uri is not None:
            dcfg.tracking_uri = tracking_uri
            dcfg.hydra.overrides.task.append(f"tracking_uri={tracking_uri}")
        if experiment_name is not None:
            dcfg.experiment_name = experiment_name
            dcfg.hydra.overrides.task.append(f"experiment_name={experiment_name}")
    to_config(dcfg, dict(dcfg.hydra.runtime.choices))
    bound_http_retries()
    check_store(resolve_tracking_uri(dcfg.tracking_uri))
    HydraConfig.instance().set_config(dcfg)
    with interrupt.handling():
        return run_job(job_config(dcfg))
