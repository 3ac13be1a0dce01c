"""The Hydra callback that makes a sweep one thing: validated up front, one parent run, ended on every path.

- Before a single run or any job of a sweep starts, every job's config is composed and validated, so
  a bad value anywhere is refused before any MLflow run exists.
- A multirun creates its parent run first (which also creates the store, atomically, and the experiment,
  and logs the datasets the jobs will share, so that parallel jobs do not race to create them). What the
  jobs need of it (the store, the experiment, the parent, the groups) is one ``SweepContext``
  (``lrlab/sweep/context.py``), published as soon as the parent exists.
- The parent ends ``FINISHED``, ``FAILED`` or ``KILLED`` from a ``finally``, whatever the summary or the
  launcher did; any job still ``RUNNING`` when its sweep ends is ended ``KILLED`` (tag ``lrlab.orphaned``).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig

from lrlab.core.config import Config, ConfigError
from lrlab.core.progress import Bar, bar
from lrlab.record.errors import JobFailed, StoreUnreachable, UsageError
from lrlab.record.orphans import ORPHANED, end_orphans
from lrlab.record.provenance import code_tags, config_hash, environment_tags, run_params
from lrlab.record.redact import redact
from lrlab.record.store import absolute_uri, check_store, resolve_tracking_uri
from lrlab.sweep import context, interrupt
from lrlab.sweep.compose import resolving, task_overrides, to_config
from lrlab.sweep.context import SweepContext
from lrlab.sweep.hydra_internals import BASIC_LAUNCHER
from lrlab.sweep.jobloader import JobLoader
from lrlab.sweep.names import REPLICATE_KEY, Planned, group_name, job_run_name
from lrlab.sweep.scrub import reserve_private, scrub_hydra_files
from lrlab.sweep.search import plan_search

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from lrlab.record.tracking import Tracker
    from lrlab.sweep.groups import Group

# The parent run's side (MLflow, figures) is imported when a sweep starts: validating a single run's
# config, which Hydra does through this module's callback, needs none of it.


class Abort(BaseException):
    """Carries an error out of a Hydra callback.

    Hydra turns an ``Exception`` raised in a callback into a warning and carries on launching jobs, so
    the callback wraps a refusal in this ``BaseException``, which Hydra lets through to ``main``.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class SweepPlan:
    jobs: list[list[str]]  # each job's overrides
    swept: list[str]  # the sweep overrides as written, e.g. ["lr=0.01,0.03,0.1"]
    keys: list[str]  # the keys they vary, e.g. ["lr"]


MAX_JOBS = 10000  # each job is composed and validated before the first starts
NOT_SWEPT = ("tracking_uri", "experiment_name")  # where a sweep is recorded: one place for all its runs


def _range_size(sweep: Any) -> int:
    """How many values ``range(start, stop, step)`` has, without listing them."""
    start, stop, step = float(sweep.start), float(sweep.stop), float(sweep.step or 1)
    return max(0, math.ceil((stop - start) / step)) if step else MAX_JOBS + 1


def plan_sweep(config: DictConfig) -> SweepPlan | None:
    """The jobs Hydra's basic sweeper will launch, in its order; None for another sweeper.

    Built from Hydra's public override parser: choice, range and glob sweeps expand as the basic sweeper
    expands them; an interval sweep, which only an optimising sweeper can run, is refused in one line.
    """
    if not str(config.hydra.sweeper.get("_target_", "")).endswith(("BasicSweeper", "LrlabSweeper")):
        return None
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + task_overrides(config.hydra)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    overrides = parser.parse_overrides(arguments)
    choices: OrderedDict[str, list[str]] = OrderedDict()
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            if override.is_range_sweep() and _range_size(override.value()) > MAX_JOBS:
                raise UsageError(f"{override.key_or_group}: {override.input_line} has more than {MAX_JOBS} values")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            if not choices[key]:
                raise UsageError(
                    f"{override.key_or_group}: {override.input_line} sweeps nothing: the sweep has no jobs"
                )
        else:
            kind = override.value_type.name.lower().replace("_", " ") if override.value_type else "sweep"
            raise UsageError(
                f"{override.key_or_group}: the basic sweeper cannot run an {kind} ({override.input_line}); "
                "sweep a choice (a,b,c), a range(start,stop,step) or a glob(*)"
            )
    sweeps = [o for o in overrides if o.is_sweep_override()]
    for where in (o for o in sweeps if o.key_or_group in NOT_SWEPT):
        raise UsageError(
            f"{where.key_or_group}: a sweep lives in one store and one experiment; run one sweep for each value"
        )
    if math.prod(len(values) for values in choices.values()) > MAX_JOBS:
        raise UsageError(f"{sweeps[0].key_or_group}: the sweep has more than {MAX_JOBS} jobs; split it into studies")
    return SweepPlan(
        jobs=[list(job) for job in itertools.product(*choices.values())],
        swept=[redact(o.input_line or f"{o.key_or_group}=...") for o in sweeps],
        keys=[o.key_or_group for o in sweeps],
    )


def shared_params(params: list[dict[str, Any]]) -> dict[str, Any]:
    """The params every job of a sweep has, with the same value."""
    if not params:
        return {}
    first, *rest = params
    return {k: v for k, v in first.items() if all(k in p and p[k] == v for p in rest)}


class LrlabCallback(Callback):
    """Registered in conf/config.yaml under ``hydra.callbacks``."""

    sweep: _Sweep | None = None  # the sweep this callback started, until it ends
    progress: Bar | None = None  # its jobs bar (shown on a terminal), where the jobs run in this process

    def __getstate__(self) -> dict[str, Any]:  # launchers pickle Hydra's callbacks: a worker ends no sweep
        return {}  # and shows no jobs bar

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            with resolving(config):  # refuse bad input before the run exists
                to_config(config, dict(config.hydra.runtime.choices))
                check_store(resolve_tracking_uri(config.get("tracking_uri")))
        except Exception as error:
            raise Abort(error) from error

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._start_sweep(config)
            reserve_private(_sweep_dir(config) / "multirun.yaml")  # Hydra writes it next, with any password
        except Exception as error:
            raise Abort(error) from error
        target = config.hydra.launcher.get("_target_") if config.hydra.get("launcher") else None
        if self.sweep is not None and self.sweep.planned and target == BASIC_LAUNCHER:
            self.progress = bar(len(self.sweep.planned), "jobs", "job", above=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra has just written the job's own files (and the sweep's ``multirun.yaml``): no password stays."""
        scrub_hydra_files(Path(config.hydra.runtime.output_dir), config.hydra.output_subdir)
        if config.hydra.mode == RunMode.MULTIRUN:
            scrub_hydra_files(_sweep_dir(config))

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if self.progress is not None:  # the jobs bar is this process's: set only where the jobs run in it
            self.progress.update()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        progress, self.progress = self.progress, None
        if progress is not None:
            progress.close()
        sweep, self.sweep = self.sweep, None
        try:
            scrub_hydra_files(_sweep_dir(config))  # jobs that ran on other machines scrubbed only there
            if sweep is not None:
                end_sweep(sweep)
        except Exception as error:
            raise Abort(error) from error

    def _start_sweep(self, config: DictConfig) -> None:
        plan = plan_sweep(config)  # every job has at least one value of each key: never empty
        # hydra/sweeper=optuna: n_trials jobs, named by their values as they come; its space is checked here by
        # probe jobs (each value, each end: lrlab/sweep/search.py), which are validated but not planned.
        search = plan_search(config) if plan is None else None
        keys = plan.keys if plan else search.keys if search else []
        planned: list[Planned] = []
        replicated = plan is not None and REPLICATE_KEY in plan.keys  # seeds are replicates: jobs in groups
        jobs: list[tuple[Config, dict[str, Any]]] = []
        refusal = _launcher_refusal(config)
        loader = JobLoader(GlobalHydra.instance().config_loader())
        for overrides in plan.jobs if plan else search.probes if search else []:
            job = loader.load_sweep_config(config, overrides)
            choices = dict(job.hydra.runtime.choices)
            with resolving(job):
                cfg, params = to_config(job, choices), run_params(job, choices)
            refused = refusal(cfg) if refusal else None
            if refused:
                raise ConfigError(refused)
            jobs.append((cfg, params))
            if plan is None:  # a probe of an optimising sweep's space
                continue
            group = group_name(overrides, keys) if replicated else None  # what it is apart from its seed
            planned.append(Planned(job_run_name(overrides, keys), config_hash(cfg), group))
        # Every job is valid: now the MLflow side (imported only here, so that a refusal costs no import).
        from lrlab.record.tracking import Tracker, dataset_input
        from lrlab.sweep.groups import plan_groups, start_groups

        with resolving(config):
            cfg = to_config(config, dict(config.hydra.runtime.choices))
        uri = absolute_uri(resolve_tracking_uri(cfg.tracking_uri))  # whatever folder a job runs in
        check_store(uri)
        typed = " ".join(task_overrides(config.hydra))
        swept = " ".join(plan.swept if plan else search.swept if search else [redact(typed)])
        tags = {
            "lrlab.sweep": "true",
            "lrlab.overrides": redact(typed),
            **code_tags(),
            **environment_tags(cfg.device.resolve()),
        }
        parent = Tracker.start(uri, cfg.experiment_name, run_name=f"sweep {swept}".strip(), tags=tags)
        self.sweep = sweep = _Sweep(parent, keys, planned)
        sweep_context = SweepContext(uri, parent.experiment_id, cfg.experiment_name, parent.run_id, tuple(keys))
        sweep_context.publish()  # from here on, whatever ends the process ends the parent
        print(f"sweep: parent run {parent.run_id} in experiment {cfg.experiment_name!r}", flush=True)
        end_orphans(parent.client, parent.experiment_id, cfg.orphan_timeout)
        parent.log_params(shared_params([params for _, params in jobs]))
        inputs = {i.dataset.digest: i for i in (dataset_input(job) for job, _ in jobs)}
        if inputs:
            parent.log_inputs(list(inputs.values()))  # created once, here, before parallel jobs link them
        if replicated and plan:
            counts = plan_groups(plan.jobs, plan.keys)
            members: dict[str, list[dict[str, Any]]] = {name: [] for name in counts}
            for job_planned, (_, params) in zip(planned, jobs, strict=True):
                members[str(job_planned.group)].append(params)
            params_of = {name: shared_params(p) for name, p in members.items()}  # what its seeds share
            group_tags = {"lrlab.overrides": tags["lrlab.overrides"], **code_tags()}
            try:
                start_groups(sweep.groups, parent, uri, cfg.experiment_name, counts, params_of, group_tags)
            finally:  # those that started, even if one failed to: each ends with the sweep
                groups = {name: group.tracker.run_id for name, group in sweep.groups.items()}
                replace(sweep_context, groups=groups).publish()
            print(f"sweep: {len(counts)} group(s) of seed replicates: {', '.join(counts)}", flush=True)


def _sweep_dir(config: DictConfig) -> Path:
    """The sweep's folder, from where it started (a job may have changed folder, ``hydra.job.chdir``)."""
    return Path(config.hydra.runtime.cwd, config.hydra.sweep.dir)


def _launcher_refusal(config: DictConfig) -> Callable[[Config], str | None] | None:
    """The launcher's own check of a job, if it has one: ``refusal(cfg)`` says in one line why it cannot run
    a job (lrlab's ``launcher=vectorized`` trains only some combinations), so that it is refused before any
    run exists, like a bad value."""
    target = config.hydra.launcher.get("_target_") if config.hydra.get("launcher") else None
    if not target:
        return None
    try:
        launcher = get_class(str(target))
    except Exception:  # Hydra reports a launcher it cannot load, as it always has, when it instantiates it
        return None
    refusal: Callable[[Config], str | None] | None = getattr(launcher, "refusal", None)
    return refusal


@dataclass
class _Sweep:
    parent: Tracker
    keys: list[str]
    planned: list[Planned]  # every job, in the sweep's order
    groups: dict[str, Group] = field(default_factory=dict)  # name -> group run, in the sweep's order


def end_sweep(sweep: _Sweep) -> None:
    """End a sweep whose launcher returned: the summary, then every status from a ``finally``.

    FINISHED unless a job failed, the summary raised, or a stop was asked for (KILLED, then
    ``KeyboardInterrupt``). Any child still RUNNING is ended KILLED: the launcher has returned, so no process
    owns it.
    """
    from lrlab.record.tracking import FAILED, FINISHED, KILLED

    final = FAILED  # if the summary raises
    failed: list[str] = []
    try:
        from lrlab.sweep.summary import summarise  # matplotlib: inside the try, so that nothing slow comes first

        failed = summarise(sweep.parent, sweep.keys, sweep.planned, sweep.groups)
        final = FAILED if failed else FINISHED
    finally:
        with interrupt.deferred():  # a second Ctrl-C cuts the summary short, not this
            if interrupt.stop_requested():  # asked before or during the summary: the sweep was interrupted
                final = KILLED
            try:
                _end_running_children(sweep.parent)
            finally:
                try:
                    for group in sweep.groups.values():  # those the summary did not end: as the sweep ends
                        group.end(final)
                finally:
                    sweep.parent.end(final)
                    context.clear()  # ended: main has nothing left to end
    if interrupt.stop_requested():
        raise KeyboardInterrupt(interrupt.stop_requested())
    if failed:
        raise JobFailed(f"{len(failed)} job(s) failed (not diverged): {', '.join(failed)}")


def _end_running_children(parent: Tracker) -> None:
    end_running_jobs(parent.client, parent.experiment_id, parent.run_id)


def end_running_jobs(client: MlflowClient, experiment_id: str, parent_id: str) -> None:
    """End KILLED (tagged ``lrlab.orphaned``) every job of the sweep ``parent_id`` that is still RUNNING."""
    from lrlab.record.tracking import KILLED, running_jobs

    for run in running_jobs(client, experiment_id, parent_id):
        client.set_tag(run.info.run_id, ORPHANED, "still RUNNING when its sweep ended")
        client.set_terminated(run.info.run_id, status=KILLED)


def end_cut_short(status: str, store_down: bool = False) -> None:
    """End the sweep in progress, if any, that an error or an interrupt cut short: its jobs still RUNNING
    KILLED, its groups and its parent ``status``. Everything it needs is in the sweep's context. A store that
    is gone cannot be written: its RUNNING runs are ended KILLED as orphans by the next start against it."""
    cut = context.current()
    if cut is None or store_down:
        context.clear()
        return
    from lrlab.record.store import open_client

    try:
        client = open_client(cut.tracking_uri, create=False)
    except StoreUnreachable:  # deleted: nothing is left to end, and nothing is made again
        context.clear()
        return
    try:
        end_running_jobs(client, cut.experiment_id, cut.parent_run_id)
    finally:
        try:
            for run_id in cut.groups.values():
                if client.get_run(run_id).info.status == "RUNNING":  # those a summary did not end
                    client.set_terminated(run_id, status=status)
        finally:
            client.set_terminated(cut.parent_run_id, status=status)
            context.clear()  # ended: a later call has nothing left to do
