"""A rerun is the same arithmetic, and resume reuses any FINISHED run of the same computation and code."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.test_cli import all_runs

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]


def jobs_of(client: MlflowClient) -> list:  # type: ignore[type-arg]
    return [r for r in all_runs(client) if "lrlab.config_hash" in r.data.tags]


@pytest.mark.soak_only  # make soak: make test has reproduce of a sweep in test_studies
def test_a_joblib_sweep_reproduces_bit_for_bit_in_one_process(
    run_cli: Cli, client: MlflowClient, run_reproduce: Callable[[str], subprocess.CompletedProcess[str]]
) -> None:
    # Large batches on 10^5 examples: torch sums them across threads, and a joblib worker has one thread.
    sweep = ["-m", "lr=0.03,0.1", "dataset.num_examples=100000", "batch_size=1000", "num_epochs=1"]
    done = run_cli(*sweep, "launcher=joblib", "hydra.launcher.n_jobs=2")
    assert done.returncode == 0, done.stderr
    runs = jobs_of(client)
    assert len(runs) == 2 and all(r.data.params["threads"] == "1" for r in runs)
    again = run_reproduce(runs[0].info.run_id)  # a worker's run, rerun in this process
    assert again.returncode == 0, again.stdout + again.stderr
    assert "NOT reproduced" not in again.stdout and "reproduced" in again.stdout


def test_resume_reuses_a_finished_run_of_this_code_whatever_came_after(run_cli: Cli, client: MlflowClient) -> None:
    sweep = ["-m", "lr=0.03,0.1", "num_epochs=1", "rerun=false"]
    assert run_cli(*sweep).returncode == 0
    first = {r.info.run_name: r for r in jobs_of(client)}
    # Another version of lrlab (another code digest) then finished the same configs, later.
    for run in first.values():
        other = client.create_run(
            run.info.experiment_id,
            run_name=run.info.run_name,
            tags={**run.data.tags, "lrlab.code_digest": "another-version", "mlflow.parentRunId": "elsewhere"},
        )
        client.set_terminated(other.info.run_id, "FINISHED")
    again = run_cli(*sweep)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped ") == 2, again.stdout
    assert len(jobs_of(client)) == 4  # nothing ran again
    assert "SKIPPED" in again.stdout and all(run.info.run_id in again.stdout for run in first.values())
