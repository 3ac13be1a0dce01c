"""``launcher=ray``, ``slurm``, ``submitit_local`` (docs/sweeps.md#sweeps-on-ray-and-slurm): each job is the basic
launcher's job in another process. What lrlab adds to Hydra's plugins: the sweep's environment pickled with each job
(``WithEnvironment``: a cluster's worker or a Slurm node need not inherit it, whatever Ray's runtime_env or Slurm's
``--export`` do), and every job awaited before a lost one is reported (the plugins raise at the first lost job)."""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from lrlab.record.errors import JobsLost, UsageError
from lrlab.record.redact import redact
from lrlab.record.store import resolve_tracking_uri
from lrlab.sweep import interrupt

if TYPE_CHECKING:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

log = logging.getLogger(__name__)

TRAVELS = ("LRLAB_", "MLFLOW_")  # the prefixes of the variables that travel with each job
# ray.init keys that only a new local Ray takes: joining a cluster (an address) refuses them.
LOCAL_ONLY = ("num_cpus", "num_gpus", "resources", "object_store_memory", "include_dashboard", "_node_ip_address")
POLL_SECONDS = 0.5  # how often the launcher looks for a stop while it waits for its jobs


def job_environment(tracking_uri: str | None) -> dict[str, str]:
    """What a job needs of the sweep's environment, wherever it runs."""
    travels = {key: value for key, value in os.environ.items() if key.startswith(TRAVELS)}
    travels["MLFLOW_TRACKING_URI"] = resolve_tracking_uri(tracking_uri)  # the parent's store, from any folder
    return travels


class WithEnvironment:
    """The task function, run with the sweep's environment set in the job's process (pickled with the job)."""

    def __init__(self, task_function: TaskFunction, environment: dict[str, str]) -> None:
        self.task_function, self.environment = task_function, environment

    def __call__(self, cfg: DictConfig) -> Any:
        os.environ.update(self.environment)
        return self.task_function(cfg)


def _lost(job_num: int, overrides: Sequence[str], error: BaseException) -> str:
    why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return redact(f"job {job_num} ({' '.join(filter_overrides(overrides))}): {type(error).__name__}: {why[:300]}")


def _stopped(overrides: Sequence[str]) -> JobReturn:
    """The return of a job that a stop cancelled: what a worker's stopped job returns (``nan``)."""
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=math.nan)


# --- Ray ---------------------------------------------------------------------------------------------------


def ray_init_arguments(init: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """``ray.init``'s arguments: join ``address`` (or ``$RAY_ADDRESS``) if given, without the keys only a new
    local Ray takes; else start a new local Ray (``address="local"``: never a cluster that ``ray start`` left
    on this machine, which Ray's default would join)."""
    given = OmegaConf.to_container(init, resolve=True) if OmegaConf.is_config(init) else init
    arguments: dict[str, Any] = dict(given)  # type: ignore[arg-type]
    address = arguments.get("address") or os.environ.get("RAY_ADDRESS")
    host = urlsplit("//" + str(address).rpartition("://")[2]).hostname if address else "127.0.0.1"
    if host in ("127.0.0.1", "localhost"):
        # Ray replaces 127.0.0.1 by the machine's own address (and so listens on every interface) unless it
        # believes it runs on a one-machine platform: a local Ray, or a driver joining one, stays on loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address:
        return {**{k: v for k, v in arguments.items() if k not in LOCAL_ONLY}, "address": address}
    arguments.setdefault("object_store_memory", 78643200)  # as the plugin: Ray's default is 30% of the RAM
    return {**arguments, "address": "local"}


ADDRESS_TIMEOUT_S = 5.0  # how long joining waits for a cluster's address to answer before refusing it


def check_ray_address(address: str) -> None:
    """Refuse, in one line, a cluster address where nothing answers: ``ray.init`` would wait minutes in native
    code (deaf to Ctrl-C) before it gave up. ``auto``, ``local`` and addresses without a port are Ray's to
    resolve."""
    host, _, port = address.rpartition("://")[2].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"{_address_key(address)}={address}: no Ray cluster answers there ({reason})") from None


def _address_key(address: str) -> str:
    """Where the address came from: the environment or the launcher's config."""
    return "RAY_ADDRESS" if address == os.environ.get("RAY_ADDRESS") else "hydra.launcher.ray.init.address"


def lrlab_job(
    hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction, state: dict[Any, Any]
) -> JobReturn:
    """One job in a Ray worker (its process is then called ``ray::lrlab_job``), as the basic launcher runs it:
    Hydra's globals, the job's config, ``run_job``."""
    setup_globals()
    Singleton.set_state(state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def launch_on_ray(
    ray_cfg: DictConfig,
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every job's epoch lines, not "[repeated 4x across cluster]"
    init = ray_init_arguments(ray_cfg.init)  # before Ray is imported: it reads its settings then
    import ray

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        if init["address"] != "local":
            check_ray_address(str(init["address"]))
        try:
            ray.init(**init)
        except ConnectionError as error:  # something answers there, but not a Ray cluster (after Ray's retries)
            raise UsageError(f"{_address_key(str(init['address']))}={init['address']}: {error}") from None
    remote_options = OmegaConf.to_container(ray_cfg.remote, resolve=True) if ray_cfg.get("remote") else {}
    task = ray.remote(**remote_options)(lrlab_job) if remote_options else ray.remote(lrlab_job)  # type: ignore[arg-type]
    travelling = WithEnvironment(task_function, job_environment(config.get("tracking_uri")))
    refs = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"job_id_for_{idx}"
            sweep_config.hydra.job.num = idx
        refs.append(task.remote(hydra_context, sweep_config, travelling, Singleton.get_state()))
    _wait(refs, lambda ref: ray.cancel(ref), lambda pending: ray.wait(pending, timeout=POLL_SECONDS)[1])
    returns, lost = [], []
    for idx, (ref, overrides) in enumerate(zip(refs, job_overrides, strict=True), start=initial_job_idx):
        try:
            returns.append(ray.get(ref))
        except ray.exceptions.TaskCancelledError:
            returns.append(_stopped(overrides))
        except ray.exceptions.RayError as error:
            lost.append(_lost(idx, overrides, error))
    if lost:
        raise JobsLost.of(lost)
    return returns


def _wait(jobs: list[Any], cancel: Callable[[Any], None], still_running: Callable[[list[Any]], list[Any]]) -> None:
    """Wait until every job has ended; on a stop, cancel those still running (once) and wait for them too."""
    pending, cancelled = list(jobs), False
    while pending:
        if interrupt.stop_requested() and not cancelled:
            cancelled = True
            for job in pending:
                try:
                    cancel(job)
                except Exception as error:  # already ended, or the scheduler refused: it ends as it ends
                    log.debug(f"cancel: {error}")
        pending = still_running(pending)


# --- submitit (Slurm, local) -------------------------------------------------------------------------------


def launch_on_submitit(
    launcher: BaseSubmititLauncher, kind: str, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    """Hydra's submitit launcher (its executor and parameters), the task function carrying the sweep's
    environment, and every job awaited before a lost one is reported."""
    import time

    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    assert launcher.config is not None and launcher.task_function is not None
    init_keys = {"submitit_folder", "max_num_timeout"}
    params = launcher.params
    executor = submitit.AutoExecutor(
        cluster=kind,
        folder=params["submitit_folder"],
        **({f"{kind}_max_num_timeout": params["max_num_timeout"]} if "max_num_timeout" in params else {}),
    )
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{(k if k in shared else f"{kind}_{k}"): v for k, v in params.items() if k not in init_keys}
    )
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    arguments = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        arguments.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    task_function = launcher.task_function
    launcher.task_function = WithEnvironment(task_function, job_environment(launcher.config.get("tracking_uri")))
    try:
        jobs = executor.map_array(launcher, *zip(*arguments, strict=True))  # pickles the launcher, and so the wrapper
    finally:
        launcher.task_function = task_function

    def still_running(pending: list[Any]) -> list[Any]:
        time.sleep(POLL_SECONDS)
        return [job for job in pending if not job.done()]

    _wait(jobs, lambda job: job.cancel(check=False), still_running)
    returns, lost = [], []
    for idx, (job, overrides) in enumerate(zip(jobs, job_overrides, strict=True), start=initial_job_idx):
        try:
            returns.append(job.results()[0])
        except Exception as error:  # submitit's UncompletedJobError: the job's process died or was cancelled
            if interrupt.stop_requested():
                returns.append(_stopped(overrides))
            else:
                lost.append(_lost(idx, overrides, error))
    if lost:
        raise JobsLost.of(lost)
    return returns
