"""What one more job of a sweep cannot avoid, measured in this process: its MLflow record, and its training.

Each job replays the callbacks of one real training (run once beforehand) through lrlab's own record code
(``TrackedRun`` over ``Tracker``), so that only the record is timed. No Hydra: a sweep adds a job's composition."""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from lrlab.api import compose, composition
from lrlab.core.config import Config
from lrlab.core.engines.results import EpochResult, TrainResult
from lrlab.core.pipeline import run_pipeline
from lrlab.core.theory import Reference
from lrlab.record.provenance import code_tags, config_hash, run_params
from lrlab.record.tracking import Tracker
from lrlab.sweep.compose import job_config
from lrlab.sweep.job import TrackedRun, job_tags


def record_seconds(jobs: int) -> float:
    """Median seconds of one job's record, over ``jobs`` jobs of one sweep in a fresh store."""
    cfg = compose("engine=compiled")
    composed = composition(cfg)
    dcfg = job_config(composed)  # a job's config, as Hydra's run_job hands it to the job: no Hydra node
    choices = dict(composed.hydra.runtime.choices)
    refs: list[Reference] = []
    epochs: list[EpochResult] = []
    result = run_pipeline(cfg, epochs.append, refs.append)
    times = []
    with tempfile.TemporaryDirectory(prefix="lrlab-bench-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        parent = Tracker.start(uri, cfg.experiment_name, "sweep")
        with contextlib.redirect_stdout(io.StringIO()):  # each job prints its epochs and its result
            for num in range(jobs):
                start = time.perf_counter()
                _one_job(uri, parent, num, cfg, dcfg, choices, refs[0], epochs, result)
                times.append(time.perf_counter() - start)
        parent.end("FINISHED")
    return statistics.median(times)


def _one_job(
    uri: str,
    parent: Tracker,
    num: int,
    cfg: Config,
    dcfg: DictConfig,
    choices: dict[str, str],
    ref: Reference,
    epochs: list[EpochResult],
    result: TrainResult,
) -> None:
    """What ``runner`` records for a sweep's job (``_start_run``, ``TrackedRun``), with this job's number."""
    parent_id, experiment = parent.run_id, parent.experiment_id  # as a sweep's context gives them
    params = run_params(dcfg, choices)
    tags = job_tags(cfg, [f"lr={cfg.lr}"], config_hash(cfg), code_tags(), num)
    tracker = Tracker.start(uri, cfg.experiment_name, f"lr={cfg.lr} #{num}", tags, parent_id, experiment)
    run = TrackedRun(tracker, cfg, dcfg, params, f"job {num}", uri, num)
    run.begin()
    run.on_reference(ref)
    for epoch in epochs:
        run.on_epoch(epoch)
    run.conclude(result)
    tracker.client.get_metric_history(tracker.run_id, "train_loss")  # the sweep's summary reads it back


def training_seconds(repeats: int) -> float:
    """Median seconds of a seed-sized job's steps 1-7 with ``engine=autograd`` (the data, its references and
    the training; untracked)."""
    cfg = compose()
    run_pipeline(cfg)  # torch's first calls
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_pipeline(cfg)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
