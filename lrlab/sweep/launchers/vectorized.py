"""``launcher=vectorized`` (docs/sweeps.md#batched-sweeps-launchervectorized): plan (each job composed once), group
(``lrlab.core.batched.group_key``), then per group: open each member's run through Hydra's ``run_job`` (so each job is
what the basic launcher makes it), train the members together, conclude each run. It returns one ``JobReturn`` per
job, in the sweep's order, with the job's final loss, as the basic launcher does."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict

from lrlab.core.batched import Member, group_key, train_group
from lrlab.core.config import Config, ConfigError
from lrlab.core.engines.results import TrainResult
from lrlab.core.progress import bar
from lrlab.record.tracking import KILLED
from lrlab.sweep import context
from lrlab.sweep.compose import to_config
from lrlab.sweep.job import JobResult, TrackedRun, open_job, should_stop
from lrlab.sweep.launchers.support import unsupported
from lrlab.sweep.names import job_run_name

log = logging.getLogger(__name__)

TAGS = {"lrlab.launcher": "vectorized"}  # and lrlab.vectorized_group: how many jobs its group had


@dataclass
class _Job:
    idx: int  # Hydra's job number
    overrides: list[str]
    config: DictConfig  # the job's full config, Hydra's node included
    cfg: Config
    run: TrackedRun | None = None
    ret: JobReturn | None = None
    result: JobResult | None = None
    error: BaseException | None = None  # what concluding its run raised (the store gone)
    stops: list[BaseException] = field(default_factory=list)


def launch(
    hydra_context: HydraContext, config: DictConfig, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    jobs = _plan(hydra_context, config, [list(o) for o in job_overrides], initial_job_idx)
    groups: dict[str, list[_Job]] = {}
    for job in jobs:
        groups.setdefault(group_key(job.cfg), []).append(job)
    log.info(f"Launching {len(jobs)} jobs in {len(groups)} batched group(s)")
    with bar(len(jobs), "jobs", "job", above=True) as progress:  # on a terminal; the epoch lines print above it
        if progress.shown:  # Hydra's log lines too: its handlers write to stdout as it is now
            configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        for members in groups.values():
            _run_group(hydra_context, config, members)
            progress.update(len(members))
    return [job.ret for job in jobs if job.ret is not None]


def _plan(hydra_context: HydraContext, config: DictConfig, job_overrides: list[list[str]], first: int) -> list[_Job]:
    """Every job's config and typed Config, each job composed once (``lrlab.sweep.jobloader``)."""
    loader = hydra_context.config_loader  # lrlab's sweeper hands over a JobLoader
    jobs = []
    for offset, overrides in enumerate(job_overrides):
        job_config = loader.load_sweep_config(config, overrides)
        idx = first + offset
        with open_dict(job_config):
            job_config.hydra.job.id = idx
            job_config.hydra.job.num = idx
        cfg = to_config(job_config, dict(job_config.hydra.runtime.choices))
        refusal = unsupported(cfg)  # the sweep's callback refused these before any run; another sweeper's jobs
        if refusal:
            raise ConfigError(refusal)
        jobs.append(_Job(idx, overrides, job_config, cfg))
    return jobs


def _run_group(hydra_context: HydraContext, config: DictConfig, group: list[_Job]) -> None:
    """Open every member's run (as Hydra runs a job), train those that opened together, conclude each run."""
    stop: BaseException | None = None
    extra = {**TAGS, "lrlab.vectorized_group": str(len(group))}
    sweep = context.current()
    for job in group:
        log.info(f"\t#{job.idx} : {' '.join(filter_overrides(job.overrides))}")
        label = f"[{job_run_name(job.overrides, sweep.keys if sweep else None)}] "
        try:
            job.ret = run_job(
                hydra_context=hydra_context,
                task_function=functools.partial(open_job, extra_tags=extra, label=label),
                config=job.config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        except KeyboardInterrupt as error:  # a stop while opening: the members opened so far stop at once
            stop = error
            break
        finally:
            configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        if job.ret.status == JobStatus.COMPLETED:
            opened = job.ret.return_value
            if isinstance(opened, TrackedRun):
                job.run = opened
            else:
                job.result = opened
    training = [job for job in group if job.run is not None]
    if training:
        train_group([_member(job) for job in training], should_stop)
    for job in group:
        if job.ret is None:
            continue
        if job.error is not None:  # as Hydra's run_job reports a job that raised: its return raises it
            job.ret.status, job.ret.return_value = JobStatus.FAILED, job.error
        elif job.result is not None:
            job.ret.return_value = job.result.final_loss
    stops = [s for job in group for s in job.stops]
    if stop is not None or stops:
        raise stop or stops[0]


def _member(job: _Job) -> Member:
    run = job.run
    assert run is not None

    def on_end(outcome: TrainResult | BaseException) -> None:
        try:
            job.result = run.conclude(outcome)
        except KeyboardInterrupt as stop:  # the main process stops after every member's run has ended
            job.result = JobResult(run.run_id, KILLED, math.nan)
            job.stops.append(stop)
        except Exception as error:
            job.error = error

    return Member(run.cfg, run.on_reference, run.on_epoch, on_end)
