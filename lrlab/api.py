"""The Python API, for notebooks and scripts: the same composition, pipeline and record as the CLI.

import lrlab
cfg = lrlab.compose("lr=0.1")            # validated, typed Config; bad input raises ConfigError
result = lrlab.train(cfg)                # the seven steps, untracked: a TrainResult
tracked = lrlab.track(cfg)               # a tracked MLflow run, recorded as the CLI records it
tracked.run_id, tracked.status, tracked.result.history[-1].train_loss
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobRuntime
from hydra.version import VersionBase
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
# Hydra's state, the environment and signal handlers belong to the process: one thread at a time changes them.
_HYDRA_LOCK = threading.Lock()  # compose(): GlobalHydra, Hydra's version base and job name
_TRACK_LOCK = threading.Lock()  # track(): HydraConfig, MLflow's HTTP settings, the stop handling
_ENV_PREFIXES = ("MLFLOW_HTTP_REQUEST_", "LRLAB_")  # what a tracked run may set in the environment


@contextmanager
def _lrlab_hydra() -> Iterator[None]:
    """lrlab's own Hydra app for a block; the caller's (a notebook's app, or none) is back after it."""
    with _HYDRA_LOCK:
        global_hydra, version, runtime = GlobalHydra.instance(), VersionBase.instance(), JobRuntime.instance()
        app, base, job = global_hydra.hydra, version.getbase(), runtime.conf
        global_hydra.clear()
        runtime.conf = copy.deepcopy(job)
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="lrlab"):
                yield
        finally:
            GlobalHydra.set_instance(global_hydra)  # initialize_config_dir puts back a copy
            global_hydra.hydra, version.version_base, runtime.conf = app, base, job


@contextmanager
def _process_state_kept() -> Iterator[None]:
    """HydraConfig and the environment variables a tracked run sets are as they were after the block."""
    saved_config = HydraConfig.instance().cfg
    saved_env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved_config
        for key in [k for k in os.environ if k.startswith(_ENV_PREFIXES) and k not in saved_env]:
            del os.environ[key]
        os.environ.update(saved_env)


def compose(*overrides: str) -> Config:
    """Compose ``conf/config.yaml`` with command-line style overrides (``"lr=0.1"``, ``"model=linear"``) and
    validate it exactly as the CLI does. Bad input raises ``ConfigError`` with the CLI's one-line message.

    Safe from several threads and inside a notebook's own Hydra app, which it leaves as it was."""
    register_configs()
    try:
        with _lrlab_hydra():
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

    HydraConfig, the environment and the signal handlers are as they were afterwards. From a thread other
    than the main one no signal handler is installed (Ctrl-C stays the main thread's); tracked runs from
    several threads run one at a time.
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
    with _TRACK_LOCK, _process_state_kept():
        bound_http_retries()
        check_store(resolve_tracking_uri(dcfg.tracking_uri))
        HydraConfig.instance().set_config(dcfg)
        with interrupt.handling():  # a no-op outside the main thread
            return run_job(job_config(dcfg))
