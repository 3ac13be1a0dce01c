"""``python -m lrlab.reproduce RUN_ID``: run a logged run again from what it logged, and compare.

The config is rebuilt from the run's group choices (params ``model``, ``loss``, ...) and its logged
``config.yaml``; the new run is tagged ``lrlab.reproduces=RUN_ID``. Every metric history except the
timings is compared: exactly on the same device, within ``--rtol`` across devices. Given a sweep's parent
run, every job of the sweep is reproduced in turn. Exit 0 only if all match.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from lrlab.record.errors import LrlabError, UsageError
from lrlab.record.provenance import GROUPS
from lrlab.record.redact import redact, redact_uri
from lrlab.record.store import bound_http_retries, check_store, read_client, resolve_tracking_uri
from lrlab.record.tracking import GROUP_TAG, child_runs, sweep_jobs
from lrlab.sweep import interrupt
from lrlab.sweep.compose import CONF_DIR, job_config, register_configs
from lrlab.sweep.console import quiet_libraries, user_error_line
from lrlab.sweep.job import run_job

TIMINGS = {"samples_per_second", "train_seconds"}  # wall-clock, never reproducible
CROSS_DEVICE_RTOL = 1e-4


def histories(client: MlflowClient, run: Run) -> dict[str, list[tuple[int, float]]]:
    keys = sorted(set(run.data.metrics) - TIMINGS)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) for key in keys}


def same(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b if rtol == 0 else math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)


def compare(
    original: dict[str, list[tuple[int, float]]], again: dict[str, list[tuple[int, float]]], rtol: float
) -> list[str]:
    """The metric keys whose histories differ (steps or values)."""
    differ = []
    for key in sorted(original.keys() | again.keys()):
        first, second = original.get(key, []), again.get(key, [])
        steps_match = [s for s, _ in first] == [s for s, _ in second]
        if not steps_match or not all(same(a, b, rtol) for (_, a), (_, b) in zip(first, second, strict=True)):
            differ.append(key)
    return differ


def logged_config(client: MlflowClient, run: Run) -> DictConfig:
    """The config.yaml that ``run`` logged; a run whose record lost it cannot be reproduced."""
    run_id = run.info.run_id
    if "config.yaml" not in {artifact.path for artifact in client.list_artifacts(run_id)}:
        raise LrlabError(
            f"run_id={run_id!r} cannot be reproduced: its config.yaml is not among its artifacts "
            f"({redact_uri(run.info.artifact_uri)})"
        )
    with tempfile.TemporaryDirectory(prefix="lrlab-reproduce-") as folder:
        logged = OmegaConf.create(Path(client.download_artifacts(run_id, "config.yaml", folder)).read_text())
    assert isinstance(logged, DictConfig)
    return logged


def reproduce(run_id: str, tracking_uri: str, logged: DictConfig | None = None) -> tuple[Run, Run]:
    client = MlflowClient(tracking_uri)
    original = client.get_run(run_id)
    if logged is None:
        logged = logged_config(client, original)
    choices = [f"{group}={original.data.params[group]}" for group in GROUPS if group in original.data.params]
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        composed = compose(config_name="config", overrides=choices, return_hydra_config=True)
    cfg = OmegaConf.merge(composed, logged)
    assert isinstance(cfg, DictConfig)
    cfg.tracking_uri, cfg.rerun = tracking_uri, True
    experiment = client.get_experiment(original.info.experiment_id)
    cfg.experiment_name = experiment.name
    HydraConfig.instance().set_config(cfg)
    result = run_job(
        job_config(cfg),
        run_name=f"reproduce {original.info.run_name}",
        extra_tags={"lrlab.reproduces": run_id},
    )
    assert result.run_id is not None
    return original, client.get_run(result.run_id)


def check(client: MlflowClient, run_id: str, tracking_uri: str, logged: DictConfig | None = None) -> bool:
    """Reproduce one run and print how its metric histories compare; True if they all match."""
    original, again = reproduce(run_id, tracking_uri, logged)
    same_device = original.data.tags.get("lrlab.env.device") == again.data.tags.get("lrlab.env.device")
    rtol = 0.0 if same_device else CROSS_DEVICE_RTOL
    first, second = histories(client, original), histories(client, again)
    differ = compare(first, second, rtol)
    tolerance = "bit for bit (same device)" if same_device else f"within rtol={rtol} (another device)"
    hashes = original.data.tags.get("lrlab.config_hash"), again.data.tags.get("lrlab.config_hash")
    print(f"reproduced {run_id} as {again.info.run_id}: config hash {hashes[0]} -> {hashes[1]}")
    for key in sorted(first.keys() | second.keys()):
        print(f"  {key:<16} {len(first.get(key, []))} steps  {'DIFFERS' if key in differ else 'matches'}")
    if differ or again.info.status != original.info.status:
        print(f"NOT reproduced ({tolerance}): {', '.join(differ) or 'status differs'}")
        return False
    print(f"reproduced {tolerance}: every metric history matches")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrlab.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the MLflow run to reproduce")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    args = parser.parse_args(argv)
    quiet_libraries()
    interrupt.install()
    bound_http_retries()
    try:
        return reproduce_all(args.run_id, resolve_tracking_uri(args.tracking_uri))
    except Exception as error:
        reported = user_error_line(error)
        if reported is None:
            raise
        line, exit_code = reported
        print(f"lrlab: error: {redact(line)}", file=sys.stderr)
        return exit_code


def reproduce_all(run_id: str, tracking_uri: str) -> int:
    """Reproduce a run, or every job of a sweep; the exit code. Every refusal comes before anything runs."""
    client = read_client(tracking_uri)  # a mistyped path is refused, never created
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UsageError(f"run_id={run_id!r}: no such run in {redact_uri(tracking_uri)}") from None
    if run.data.tags.get(GROUP_TAG) == "true":
        raise UsageError(_group_run(client, run))
    experiment = client.get_experiment(run.info.experiment_id)
    if experiment.lifecycle_stage == "deleted":  # the new runs would go there
        restore = f"mlflow experiments restore --experiment-id {experiment.experiment_id}"
        raise UsageError(f"run_id={run_id!r}: its experiment {experiment.name!r} is deleted; restore it ({restore})")
    sweep = run.data.tags.get("lrlab.sweep") == "true"
    jobs = sweep_jobs(client, run.info.experiment_id, run_id) if sweep else [run]
    if not jobs:
        raise UsageError(f"run_id={run_id!r} is a sweep with no jobs to reproduce")
    logged = {job.info.run_id: logged_config(client, job) for job in jobs}  # each record whole, or none runs
    try:
        check_store(tracking_uri)
    except UsageError as error:
        raise UsageError(f"{error} (reproduce records its new runs in this store)") from None
    if not sweep:
        return 0 if check(client, run_id, tracking_uri, logged[run_id]) else 1
    print(f"{run_id} is a sweep: reproducing its {len(jobs)} job(s)")
    matched = [check(client, job.info.run_id, tracking_uri, logged[job.info.run_id]) for job in jobs]
    print(f"{sum(matched)} of {len(jobs)} job(s) reproduced")
    return 0 if all(matched) else 1


def _group_run(client: MlflowClient, group: Run) -> str:
    """Why a group run is not reproduced, and what to reproduce instead."""
    run_id = group.info.run_id
    seeds = sorted(
        child_runs(client, group.info.experiment_id, run_id), key=lambda r: int(r.data.tags.get("lrlab.job_num", "0"))
    )
    example = f" (e.g. {seeds[0].info.run_id})" if seeds else ""
    sweep = group.data.tags.get("mlflow.parentRunId")
    whole = f", or the whole sweep {sweep}" if sweep else ""
    return (
        f"run_id={run_id!r} is a group run: it aggregates {len(seeds)} seed run(s) and trained nothing itself; "
        f"reproduce one of its seed runs{example}{whole}"
    )


if __name__ == "__main__":
    sys.exit(main())
