"""The runner: one job is a tracked run of the seven-step pipeline.

validate the composed config -> start an MLflow run -> the pipeline -> end the run with its status.
Entry points (``lrlab.run``, ``lrlab.reproduce``) call ``run_job``; it calls the pipeline and the tracker.
``run_job`` is ``open_job`` (the run started and described) then ``TrackedRun.conclude`` (how it ended): a
launcher that trains several jobs at once (``launcher=vectorized``) calls the two halves itself and feeds
each run the epochs it trained, so that every launcher's record is this module's.
"""

from __future__ import annotations

import contextlib
import math
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lrlab.core.config import Config
from lrlab.core.metrics import EPOCH_METRICS
from lrlab.core.outcome import classify
from lrlab.core.pipeline import Diverged, EpochResult, Stopped, TrainResult, run_pipeline
from lrlab.core.theory import Reference, stationary_excess_loss
from lrlab.record.errors import JobFailed, StoreUnreachable
from lrlab.record.orphans import end_orphans
from lrlab.record.provenance import code_tags, config_hash, config_yaml, environment_tags, run_params
from lrlab.record.redact import redact, redact_uri
from lrlab.record.store import (
    experiment_id,
    is_server,
    open_client,
    resolve_tracking_uri,
    server_answers,
    sqlite_path,
)
from lrlab.record.tracking import FAILED, FINISHED, KILLED, Tracker, dataset_input, finished_run
from lrlab.sweep import context, interrupt
from lrlab.sweep.compose import task_overrides, to_config
from lrlab.sweep.context import SweepContext
from lrlab.sweep.names import job_run_name
from lrlab.sweep.optuna_trial import Pruned, TrialHooks, trial_hooks

SKIPPED = "SKIPPED"
OUTCOME_TAG = "lrlab.outcome"  # overflow, growing, above_floor, at_floor or bounded (lrlab/core/outcome.py)


@dataclass
class JobResult:
    """What one job did: its MLflow run and, when it trained to the end, the training result."""

    run_id: str | None  # None when the job was skipped (rerun=false) or refused after a stop
    status: str  # FINISHED, FAILED, KILLED or SKIPPED
    final_loss: float  # the last epoch's train_loss; inf if it diverged, nan if there is none
    result: TrainResult | None = None  # the seven steps' result (FINISHED runs)


def print_epoch(result: EpochResult, label: str = "") -> None:
    print(f"{label}epoch {result.epoch}, loss {result.train_loss:f}", flush=True)


def should_stop() -> bool:
    """Whether a stop (Ctrl-C, SIGTERM) was asked for: training asks before every step."""
    return interrupt.stop_requested() is not None


def run_job(dcfg: DictConfig, run_name: str | None = None, extra_tags: dict[str, str] | None = None) -> JobResult:
    """One job: a tracked run of the pipeline."""
    run = open_job(dcfg, run_name, extra_tags)
    if isinstance(run, JobResult):  # skipped, or refused after a stop, or failed as it started
        return run
    hooks = TrialHooks(run.on_epoch, should_stop)
    try:  # an Optuna trial with a pruner reports each epoch and may be stopped early (lrlab/sweep/optuna_trial.py)
        hooks = trial_hooks(context.current(), run.job_num, run.on_epoch, should_stop)
        result = run_pipeline(run.cfg, hooks.on_epoch, run.on_reference, hooks.should_stop)
    except BaseException as error:  # Diverged, Stopped, a crash or a forced interrupt: the run records it
        return run.conclude(hooks.outcome(error))
    finally:
        hooks.close()
    return run.conclude(result)


def open_job(
    dcfg: DictConfig, run_name: str | None = None, extra_tags: dict[str, str] | None = None, label: str = ""
) -> TrackedRun | JobResult:
    """The first half of a job, under Hydra's config of that job: validate it, hear a stop, skip a config that
    already FINISHED (rerun=false), start its MLflow run and record what the run is (params, tags, config.yaml,
    the dataset). What trains it reports to the returned run, which ``conclude`` ends. A ``JobResult`` when
    there is nothing to train: skipped, refused after a stop (a worker), or failed while recording.

    ``label`` prefixes the run's printed epoch lines (a launcher that trains several jobs at once).
    """
    hydra_cfg = HydraConfig.get()
    choices = dict(hydra_cfg.runtime.choices)
    cfg = to_config(dcfg, choices)
    if not interrupt.is_installed_here():  # a launcher's worker process: its main process forwards stops
        interrupt.install(worker=True)
    if interrupt.stop_requested():  # a job launched after a stop: no run
        if interrupt.is_worker():
            return JobResult(None, KILLED, math.nan)
        raise KeyboardInterrupt(interrupt.stop_requested())
    sweep = context.current()
    started_in = Path(hydra_cfg.runtime.cwd)  # hydra.job.chdir moves a job, not its store
    uri = sweep.tracking_uri if sweep else resolve_tracking_uri(cfg.tracking_uri, started_in)
    try:
        run = _start_run(dcfg, cfg, choices, uri, sweep, run_name, extra_tags, label)
    except JobFailed:
        raise
    except Exception:  # before the run existed (the store, the experiment): a dead server, or a bug
        down = _unreachable(uri)
        if down:
            raise down from None
        raise
    if isinstance(run, JobResult):
        return run
    try:
        run.begin()
    except BaseException as error:
        return run.conclude(error)
    return run


def _unreachable(uri: str) -> StoreUnreachable | None:
    """The error to raise if ``uri`` is a SQLite store that was deleted or a tracking server that no longer
    answers."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        return StoreUnreachable(StoreUnreachable.gone(path))
    if not (is_server(uri) and not server_answers(uri)):
        return None
    return StoreUnreachable(StoreUnreachable.about(redact_uri(uri)))


def _start_run(
    dcfg: DictConfig,
    cfg: Config,
    choices: dict[str, str],
    uri: str,
    sweep: SweepContext | None,
    run_name: str | None,
    extra_tags: dict[str, str] | None,
    label: str,
) -> TrackedRun | JobResult:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = task_overrides(hydra_cfg)
    params = run_params(dcfg, choices)
    identity = config_hash(cfg)
    name = run_name or job_run_name(overrides, sweep.keys if sweep else None)
    parent_id = sweep.parent_of(overrides) if sweep else None  # in a sweep over seeds, the job's group
    experiment_name = sweep.experiment_name if sweep else cfg.experiment_name
    provenance = code_tags()
    if sweep is None or not cfg.rerun:
        client = open_client(uri, create=sweep is None)
        experiment = sweep.experiment_id if sweep else experiment_id(client, uri, experiment_name)
        if sweep is None:  # a sweep's parent has done this for its jobs
            end_orphans(client, experiment, cfg.orphan_timeout)
        digest = provenance["lrlab.code_digest"]
        done = None if cfg.rerun else finished_run(client, experiment, identity, digest)
        if done:
            print(f"skipped {name}: this config already FINISHED as run {done.info.run_id} (rerun=true runs it again)")
            return JobResult(None, SKIPPED, math.nan)
        other = None if cfg.rerun else finished_run(client, experiment, identity)
        if other:
            print(f"not reusing run {other.info.run_id} for {name}: it was made by other lrlab code; running again")
    job_num = int(hydra_cfg.job.num) if multirun else None
    tags = job_tags(cfg, overrides, identity, provenance, job_num, extra_tags)
    known = sweep.experiment_id if sweep else None
    tracker = Tracker.start(
        uri, experiment_name, name, tags, parent_run_id=parent_id, experiment=known, create=sweep is None
    )
    return TrackedRun(tracker, cfg, dcfg, params, name, uri, job_num, label)


def job_tags(
    cfg: Config,
    overrides: list[str],
    identity: str,
    provenance: dict[str, str],
    job_num: int | None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, str]:
    """A job's run tags: its overrides, config hash (``identity``), code (``provenance``), environment and, in
    a sweep, its job number."""
    tags = {
        "lrlab.overrides": redact(" ".join(overrides)),
        "lrlab.config_hash": identity,
        "lrlab.errors_against": cfg.dataset.errors_against,  # true_parameters, or least_squares_fit (a table)
        **provenance,
        **environment_tags(cfg.device.resolve()),
        **(extra_tags or {}),
    }
    if job_num is not None:
        tags["lrlab.job_num"] = str(job_num)
    return tags


class TrackedRun:
    """One job's MLflow run while it trains: ``begin`` records what it is, ``on_reference`` and ``on_epoch``
    record what training reports, ``conclude`` records how it ended and sets its final status on every path.
    """

    def __init__(
        self,
        tracker: Tracker,
        cfg: Config,
        dcfg: DictConfig,
        params: dict[str, Any],
        name: str,
        uri: str,
        job_num: int | None,
        label: str = "",
    ) -> None:
        self.tracker, self.cfg, self.dcfg, self.params = tracker, cfg, dcfg, params
        self.name, self.uri, self.job_num, self.label = name, uri, job_num, label

    @property
    def run_id(self) -> str:
        return self.tracker.run_id

    def begin(self) -> None:
        self.tracker.log_params(self.params)
        self.tracker.log_text(config_yaml(self.dcfg), "config.yaml")
        self.tracker.log_inputs([dataset_input(self.cfg)])

    def on_epoch(self, result: EpochResult) -> None:
        # printed only once stored: an epoch on the screen is an epoch in the record
        self.tracker.log_metrics(result.metrics(), result.epoch, announce=lambda: print_epoch(result, self.label))

    reference: Reference | None = None  # what on_reference got: _log_result compares with it

    def on_reference(self, ref: Reference) -> None:
        self.reference = ref
        self.tracker.log_metrics(ref.as_metrics(), step=0)
        if ref.ols_note:
            self.tracker.set_tags({"lrlab.ols": ref.ols_note})

    def _outcome(self, history: list[EpochResult], diverged: bool) -> dict[str, str]:
        """The run's ``lrlab.outcome`` tag, from its epochs and SGD's floor (where ``on_reference`` gave one)."""
        floor = self.reference.theory_excess_loss if self.reference else None
        return {OUTCOME_TAG: classify(history, diverged, floor).outcome.value}

    def conclude(self, outcome: TrainResult | BaseException) -> JobResult:
        """End the run with what training came to: a result (FINISHED), ``Diverged`` (FAILED, tagged),
        ``Stopped`` (KILLED; in the main process it then raises ``KeyboardInterrupt``), another exception
        (FAILED with its traceback; raised again outside a sweep, or when the store is gone)."""
        tracker, cfg, multirun = self.tracker, self.cfg, self.job_num is not None
        status = KILLED  # whatever escapes below without setting a status is an interrupt
        try:
            if isinstance(outcome, Diverged):
                tracker.flush()
                print(f"{self.label}{outcome} (lr={cfg.lr}): the run ends FAILED, tagged lrlab.diverged", flush=True)
                tags = {"lrlab.diverged": "true", "lrlab.diverged_epoch": outcome.epoch}
                tracker.set_tags(tags | self._outcome(outcome.history, True))
                _log_curves(tracker, cfg, outcome.history)
                status = FAILED
                return JobResult(tracker.run_id, FAILED, math.inf)
            if isinstance(outcome, Pruned):  # an Optuna trial's pruner stopped it: KILLED, not failed
                tracker.flush()
                tracker.set_tags({"lrlab.pruned": "true", "lrlab.pruned_epoch": outcome.epoch})
                print(f"{self.label}{self.name}: {outcome}, ends KILLED, tagged lrlab.pruned", flush=True)
                return JobResult(tracker.run_id, KILLED, outcome.history[-1].train_loss)
            if isinstance(outcome, Stopped):
                tracker.flush()
                why = f"{interrupt.stop_requested()} during epoch {outcome.epoch}"
                tracker.set_tags({"lrlab.stopped": why})
                print(
                    f"stopped by {why}: {self.name} ends KILLED with its {len(outcome.history)} epoch(s) stored",
                    flush=True,
                )
                if interrupt.is_worker():
                    return JobResult(tracker.run_id, KILLED, math.nan)
                raise KeyboardInterrupt(why) from None
            if isinstance(outcome, BaseException):
                raise outcome
            tracker.set_tags(self._outcome(outcome.history, False))
            _log_result(tracker, cfg, outcome, self.reference)
            status = FINISHED
            return JobResult(tracker.run_id, FINISHED, outcome.history[-1].train_loss, outcome)
        except Exception as error:  # a bug or a crash: record it; a sweep goes on with its other jobs
            down = _unreachable(self.uri)
            if down:
                status = ""  # the store is gone: nothing more can be written
                raise down from None
            status = FAILED
            what = redact(f"{type(error).__name__}: {error}")
            with contextlib.suppress(Exception):  # recording the error must not replace it (e.g. no artifact store)
                tracker.set_tags({"lrlab.error": what[:5000]})
                tracker.log_text(redact(traceback.format_exc()), "error.txt")
            if multirun:
                print(f"job {self.job_num} failed: {what}", file=sys.stderr, flush=True)
                return JobResult(tracker.run_id, FAILED, math.nan)
            raise JobFailed(f"run {tracker.run_id} failed: {what}") from error
        finally:
            with interrupt.deferred():  # a second Ctrl-C cuts the record short, not the status
                if status:
                    tracker.end(status)
                else:
                    tracker.abandon()


def _log_curves(tracker: Tracker, cfg: Config, history: list[EpochResult]) -> None:
    if not cfg.plot_curves:
        return
    from lrlab.sweep import report  # matplotlib: imported only by runs that draw

    curves = {key: [(r.epoch, getattr(r, key)) for r in history] for key in EPOCH_METRICS}
    figure = report.loss_curves(curves, f"lr={cfg.lr} batch_size={cfg.batch_size}")
    tracker.log_figure(figure, "loss_curves.png")


def _errors_against(cfg: Config, ref: Reference | None) -> dict[str, Any]:
    """params.json's reference, named for what it is: ``true_w``, ``true_b`` (synthetic data), or a table's columns
    and its least-squares fit, ``least_squares_w`` (one per feature, in order) and ``least_squares_b``."""
    if cfg.dataset.path is None:
        return {"true_w": cfg.dataset.true_w, "true_b": cfg.dataset.true_b}
    table = cfg.dataset.table()
    fit = {"least_squares_w": list(ref.against.w), "least_squares_b": ref.against.b} if ref else {}
    return {"features": list(table.features), "target": table.target, **fit}


def _log_result(tracker: Tracker, cfg: Config, result: TrainResult, ref: Reference | None = None) -> None:
    theory = ref.theory_excess_loss if ref else None
    excess = stationary_excess_loss([r.excess_loss for r in result.history], cfg.theory_epochs, theory)
    timings = {"samples_per_second": result.samples_per_second, "train_seconds": result.train_seconds}
    tracker.log_metrics({**timings, **excess}, cfg.num_epochs)
    tracker.flush()
    tracker.log_dict({"w": result.w, "b": result.b, **_errors_against(cfg, ref)}, "params.json")
    _log_curves(tracker, cfg, result.history)
    last = result.history[-1]
    w_star, b_star = ("true_w", "true_b") if cfg.dataset.path is None else ("w_ols", "b_ols")
    print(f"error in estimating w: {last.w_error:.6f} (‖w − {w_star}‖₂)", flush=True)
    print(f"error in estimating b: {last.b_error:.6f} (|b − {b_star}|)", flush=True)
    print(
        f"run {tracker.run_id}: FINISHED (make reproduce RUN={tracker.run_id} runs it again and compares)", flush=True
    )
