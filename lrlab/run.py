"""``python -m lrlab.run [key=value ...]`` runs once; ``-m key=a,b,c`` sweeps.

validate the composed config -> start an MLflow run -> the seven-step pipeline -> end the run.
A user error (a bad value, an unknown option, a missing device) is one line on stderr and exit 2,
before any run is created (the callback in ``sweep.py`` validates every job first).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from lrlab import report
from lrlab.config import Config, register_configs
from lrlab.errors import Abort, JobFailed, user_error_line
from lrlab.pipeline import Diverged, EpochResult, TrainResult, run_pipeline
from lrlab.provenance import code_tags, config_hash, environment_tags, run_params
from lrlab.sweep import PARENT_ENV, end_interrupted_sweep, job_run_name, to_config
from lrlab.theory import Reference
from lrlab.tracking import (
    FAILED,
    FINISHED,
    KILLED,
    Tracker,
    bound_http_retries,
    dataset_input,
    finished_run,
    resolve_tracking_uri,
)

METRICS = ("train_loss", "w_error", "b_error", "excess_loss")

register_configs()


def print_epoch(result: EpochResult) -> None:
    print(f"epoch {result.epoch}, loss {result.train_loss:f}", flush=True)


def run_job(dcfg: DictConfig, run_name: str | None = None, extra_tags: dict[str, str] | None = None) -> float:
    """One job: a tracked run of the pipeline. Returns the final train_loss (inf if it diverged)."""
    hydra_cfg = HydraConfig.get()
    cfg = to_config(dcfg)
    overrides = list(hydra_cfg.overrides.task)
    params = run_params(dcfg, dict(hydra_cfg.runtime.choices))
    identity = config_hash(params)
    tracking_uri = resolve_tracking_uri(cfg.tracking_uri)
    name = run_name or job_run_name(overrides)
    if not cfg.rerun:
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(cfg.experiment_name)
        done = experiment and finished_run(client, experiment.experiment_id, identity)
        if done:
            print(f"skipped {name}: this config already FINISHED as run {done.info.run_id} (rerun=true runs it again)")
            return math.nan
    tags = {
        "lrlab.overrides": " ".join(overrides),
        "lrlab.config_hash": identity,
        **code_tags(),
        **environment_tags(cfg.device.resolve()),
        **(extra_tags or {}),
    }
    if hydra_cfg.mode == RunMode.MULTIRUN:
        tags["lrlab.job_num"] = str(hydra_cfg.job.num)
    tracker = Tracker.start(
        tracking_uri,
        cfg.experiment_name,
        run_name=name,
        tags=tags,
        parent_run_id=os.environ.get(PARENT_ENV),
    )
    status = KILLED  # whatever escapes below without setting a status is an interrupt
    try:
        tracker.log_params(params)
        tracker.log_text(OmegaConf.to_yaml(dcfg, resolve=True), "config.yaml")
        tracker.log_inputs([dataset_input(cfg)])

        def on_epoch(result: EpochResult) -> None:
            tracker.log_metrics({key: getattr(result, key) for key in METRICS}, result.epoch)
            print_epoch(result)  # after logging: an epoch on the screen is an epoch in the record

        def on_reference(ref: Reference) -> None:
            tracker.log_metrics(ref.as_metrics(), step=0)

        try:
            result = run_pipeline(cfg, on_epoch, on_reference)
        except Diverged as diverged:
            print(f"{diverged} (lr={cfg.lr}): the run ends FAILED, tagged lrlab.diverged", flush=True)
            tracker.set_tags({"lrlab.diverged": "true", "lrlab.diverged_epoch": diverged.epoch})
            _log_curves(tracker, cfg, diverged.history)
            status = FAILED
            return math.inf
        _log_result(tracker, cfg, result)
        status = FINISHED
        return result.history[-1].train_loss
    except Exception as error:  # a bug or a crash: record it; a sweep goes on with its other jobs
        status = FAILED
        tracker.set_tags({"lrlab.error": f"{type(error).__name__}: {error}"[:5000]})
        tracker.log_text(traceback.format_exc(), "error.txt")
        if hydra_cfg.mode == RunMode.MULTIRUN:
            print(f"job {hydra_cfg.job.num} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            return math.nan
        raise JobFailed(f"run {tracker.run_id} failed: {type(error).__name__}: {error}") from error
    finally:
        tracker.end(status)


def _log_curves(tracker: Tracker, cfg: Config, history: list[EpochResult]) -> None:
    curves = {key: [(r.epoch, getattr(r, key)) for r in history] for key in METRICS}
    figure = report.loss_curves(curves, f"lr={cfg.lr} batch_size={cfg.batch_size}")
    tracker.log_figure(figure, "loss_curves.png")
    report.close(figure)


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


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(dcfg: DictConfig) -> float:
    return run_job(dcfg)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    # Hydra prints its own multi-line reports unless HYDRA_FULL_ERROR is set; we want the exception
    # so that a user error is one line. Bugs still get their full traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    signal.signal(signal.SIGTERM, _terminate)  # SIGTERM ends runs KILLED, like Ctrl-C
    bound_http_retries()
    try:
        try:
            hydra_main()
        except Abort as abort:  # raised by the callback, see errors.Abort
            raise abort.error from abort.error.__cause__
    except KeyboardInterrupt:
        end_interrupted_sweep()
        print("lrlab: interrupted: the running run and its sweep end KILLED", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        reported = user_error_line(error)
        if reported is None:
            raise
        line, exit_code = reported
        print(f"lrlab: error: {line}", file=sys.stderr)
        sys.exit(exit_code)


if __name__ == "__main__":
    main()
