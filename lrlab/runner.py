"""The runner: one job is a tracked run of the seven-step pipeline.

validate the composed config -> start an MLflow run -> the pipeline -> end the run with its status.
Entry points (``lrlab.run``, ``lrlab.reproduce``) call ``run_job``; it calls the pipeline and the tracker.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import traceback
from dataclasses import dataclass

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lrlab import interrupt
from lrlab.config import Config, job_config, to_config
from lrlab.errors import JobFailed, StoreUnreachable
from lrlab.names import GROUPS_ENV, PARENT_ENV, group_name, job_run_name, redact, redact_uri, sweep_keys
from lrlab.orphans import end_orphans
from lrlab.pipeline import Diverged, EpochResult, Stopped, TrainResult, run_pipeline
from lrlab.provenance import code_tags, config_hash, config_yaml, environment_tags, run_params
from lrlab.store import experiment_id, is_server, open_client, resolve_tracking_uri, server_answers
from lrlab.theory import Reference
from lrlab.tracking import FAILED, FINISHED, KILLED, Tracker, dataset_input, finished_run

METRICS = ("train_loss", "w_error", "b_error", "excess_loss")
SKIPPED = "SKIPPED"

_store_down: str | None = None  # once a tracking server stopped answering, later jobs of this process fail fast


@dataclass
class JobResult:
    """What one job did: its MLflow run and, when it trained to the end, the training result."""

    run_id: str | None  # None when the job was skipped (rerun=false) or refused after a stop
    status: str  # FINISHED, FAILED, KILLED or SKIPPED
    final_loss: float  # the last epoch's train_loss; inf if it diverged, nan if there is none
    result: TrainResult | None = None  # the seven steps' result (FINISHED runs)


def print_epoch(result: EpochResult) -> None:
    print(f"epoch {result.epoch}, loss {result.train_loss:f}", flush=True)


def run_job(dcfg: DictConfig, run_name: str | None = None, extra_tags: dict[str, str] | None = None) -> JobResult:
    """One job: a tracked run of the pipeline."""
    hydra_cfg = HydraConfig.get()
    choices = dict(hydra_cfg.runtime.choices)
    cfg = to_config(dcfg, choices)
    if not interrupt.is_installed_here():  # a launcher's worker process: its main process forwards stops
        interrupt.install(worker=True)
    if interrupt.stop_requested():  # a job launched after a stop: no run
        if interrupt.is_worker():
            return JobResult(None, KILLED, math.nan)
        raise KeyboardInterrupt(interrupt.stop_requested())
    uri = resolve_tracking_uri(cfg.tracking_uri)
    if _store_down:
        raise StoreUnreachable(_store_down)
    try:
        return _tracked_job(dcfg, cfg, choices, uri, run_name, extra_tags)
    except JobFailed:
        raise
    except Exception:  # before the run existed (the store, the experiment): a dead server, or a bug
        down = _unreachable(uri)
        if down:
            raise down from None
        raise


def _unreachable(uri: str) -> StoreUnreachable | None:
    """The error to raise if ``uri`` is a tracking server that no longer answers; later jobs then fail fast."""
    global _store_down
    if not (is_server(uri) and not server_answers(uri)):
        return None
    _store_down = StoreUnreachable.about(redact_uri(uri))
    return StoreUnreachable(_store_down)


def _tracked_job(
    dcfg: DictConfig,
    cfg: Config,
    choices: dict[str, str],
    uri: str,
    run_name: str | None,
    extra_tags: dict[str, str] | None,
) -> JobResult:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    params = run_params(job_config(dcfg), choices)
    identity = config_hash(cfg)
    name = run_name or job_run_name(overrides)
    parent_id = os.environ.get(PARENT_ENV)
    groups = json.loads(os.environ.get(GROUPS_ENV, "{}"))  # a sweep over seeds: a job's parent is its group
    if parent_id and groups:
        parent_id = groups.get(group_name(overrides, sweep_keys()), parent_id)
    provenance = code_tags()
    if parent_id is None or not cfg.rerun:
        client = open_client(uri)
        experiment = experiment_id(client, uri, cfg.experiment_name)
        if parent_id is None:  # a sweep's parent has done this for its jobs
            end_orphans(client, experiment, cfg.orphan_timeout)
        done = None if cfg.rerun else finished_run(client, experiment, identity)
        if done and done.data.tags.get("lrlab.code_digest") == provenance["lrlab.code_digest"]:
            print(f"skipped {name}: this config already FINISHED as run {done.info.run_id} (rerun=true runs it again)")
            return JobResult(None, SKIPPED, math.nan)
        if done:
            print(f"not reusing run {done.info.run_id} for {name}: it was made by other lrlab code; running again")
    tags = {
        "lrlab.overrides": redact(" ".join(overrides)),
        "lrlab.config_hash": identity,
        **provenance,
        **environment_tags(cfg.device.resolve()),
        **(extra_tags or {}),
    }
    if multirun:
        tags["lrlab.job_num"] = str(hydra_cfg.job.num)
    tracker = Tracker.start(uri, cfg.experiment_name, run_name=name, tags=tags, parent_run_id=parent_id)
    status = KILLED  # whatever escapes below without setting a status is an interrupt
    try:
        tracker.log_params(params)
        tracker.log_text(config_yaml(dcfg), "config.yaml")
        tracker.log_inputs([dataset_input(cfg)])

        def on_epoch(result: EpochResult) -> None:
            # printed only once stored: an epoch on the screen is an epoch in the record
            metrics = {key: getattr(result, key) for key in METRICS}
            tracker.log_metrics(metrics, result.epoch, announce=lambda: print_epoch(result))

        def on_reference(ref: Reference) -> None:
            tracker.log_metrics(ref.as_metrics(), step=0)
            if ref.ols_note:
                tracker.set_tags({"lrlab.ols": ref.ols_note})

        def should_stop() -> bool:
            return interrupt.stop_requested() is not None

        try:
            result = run_pipeline(cfg, on_epoch, on_reference, should_stop)
        except Diverged as diverged:
            tracker.flush()
            print(f"{diverged} (lr={cfg.lr}): the run ends FAILED, tagged lrlab.diverged", flush=True)
            tracker.set_tags({"lrlab.diverged": "true", "lrlab.diverged_epoch": diverged.epoch})
            _log_curves(tracker, cfg, diverged.history)
            status = FAILED
            return JobResult(tracker.run_id, FAILED, math.inf)
        except Stopped as stopped:
            tracker.flush()
            why = f"{interrupt.stop_requested()} during epoch {stopped.epoch}"
            tracker.set_tags({"lrlab.stopped": why})
            print(f"stopped by {why}: {name} ends KILLED with its {len(stopped.history)} epoch(s) stored", flush=True)
            if interrupt.is_worker():
                return JobResult(tracker.run_id, KILLED, math.nan)
            raise KeyboardInterrupt(why) from None
        _log_result(tracker, cfg, result)
        status = FINISHED
        return JobResult(tracker.run_id, FINISHED, result.history[-1].train_loss, result)
    except Exception as error:  # a bug or a crash: record it; a sweep goes on with its other jobs
        down = _unreachable(uri)
        if down:
            status = ""  # the store is gone: nothing more can be written
            raise down from None
        status = FAILED
        what = redact(f"{type(error).__name__}: {error}")
        with contextlib.suppress(Exception):  # recording the error must not replace it (e.g. no artifact store)
            tracker.set_tags({"lrlab.error": what[:5000]})
            tracker.log_text(redact(traceback.format_exc()), "error.txt")
        if multirun:
            print(f"job {hydra_cfg.job.num} failed: {what}", file=sys.stderr, flush=True)
            return JobResult(tracker.run_id, FAILED, math.nan)
        raise JobFailed(f"run {tracker.run_id} failed: {what}") from error
    finally:
        if status:
            tracker.end(status)
        else:
            tracker.abandon()


def _log_curves(tracker: Tracker, cfg: Config, history: list[EpochResult]) -> None:
    if not cfg.plot_curves:
        return
    from lrlab import report  # matplotlib: imported only by runs that draw

    curves = {key: [(r.epoch, getattr(r, key)) for r in history] for key in METRICS}
    figure = report.loss_curves(curves, f"lr={cfg.lr} batch_size={cfg.batch_size}")
    tracker.log_figure(figure, "loss_curves.png")


def _log_result(tracker: Tracker, cfg: Config, result: TrainResult) -> None:
    tracker.log_metrics(
        {"samples_per_second": result.samples_per_second, "train_seconds": result.train_seconds}, cfg.num_epochs
    )
    tracker.flush()
    tracker.log_dict(
        {"w": result.w, "b": result.b, "true_w": cfg.dataset.true_w, "true_b": cfg.dataset.true_b}, "params.json"
    )
    _log_curves(tracker, cfg, result.history)
    last = result.history[-1]
    print(f"error in estimating w: {last.w_error:.6f} (‖w − true_w‖₂)", flush=True)
    print(f"error in estimating b: {last.b_error:.6f} (|b − true_b|)", flush=True)
    print(
        f"run {tracker.run_id}: FINISHED (make reproduce RUN={tracker.run_id} runs it again and compares)", flush=True
    )
