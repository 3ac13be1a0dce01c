"""A sweep lives in one store and one experiment, resolved once when it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.test_cli import all_runs

pytestmark = pytest.mark.e2e


def lrlab(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the default store (./mlflow.db of the folder it runs from)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    command = [sys.executable, "-m", "lrlab.run", *args, "hydra.sweep.dir=multirun", "hydra.run.dir=outputs"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("sweep", [True, pytest.param(False, marks=pytest.mark.soak_only)])
def test_jobs_that_change_folder_still_write_to_the_store_of_the_folder_lrlab_ran_from(
    tmp_path: Path, sweep: bool
) -> None:
    args = ["-m", "lr=0.01,0.1"] if sweep else ["lr=0.1"]
    done = lrlab(tmp_path, *args, "num_epochs=1", "hydra.job.chdir=true")
    assert done.returncode == 0, done.stderr
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("mlflow.db")] == [Path("mlflow.db")]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = all_runs(client)
    assert len(runs) == (3 if sweep else 1) and {r.info.status for r in runs} == {"FINISHED"}
    experiment = client.get_experiment_by_name("lrlab")  # a fresh store: the experiment lrlab made
    assert experiment is not None and experiment.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize("key", ["experiment_name=a,b", "tracking_uri=sqlite:///one.db,sqlite:///two.db"])
def test_a_sweep_over_where_it_is_recorded_is_refused_in_one_line(tmp_path: Path, key: str) -> None:
    done = lrlab(tmp_path, "-m", key, "num_epochs=1")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"lrlab: error: {key.split('=')[0]}:") and "one store and one experiment" in line
    assert not list(tmp_path.rglob("*.db"))  # refused before any store or run exists


@pytest.mark.parametrize("sweep", [True, pytest.param(False, marks=pytest.mark.soak_only)])
def test_hydra_interpolations_work_as_in_any_hydra_app(tmp_path: Path, sweep: bool) -> None:
    args = ["-m", "lr=0.01,0.1"] if sweep else []
    done = lrlab(tmp_path, *args, "experiment_name=${hydra:job.name}", "num_epochs=1")
    assert done.returncode == 0, done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("run")  # Hydra's job name for python -m lrlab.run
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == (3 if sweep else 1) and {r.info.status for r in runs} == {"FINISHED"}
    # Recorded as typed (a sweep's jobs in Hydra's escaped spelling), not as resolved.
    assert all("job.name" in r.data.tags["lrlab.overrides"] for r in runs)


def test_a_store_deleted_during_a_sweep_ends_it_in_one_line_and_is_not_made_again(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    command = [sys.executable, "-m", "lrlab.run", "-m", "lr=0.01,0.02,0.03", "num_epochs=40", "hydra.sweep.dir=m"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:  # the first job is training
        if line.startswith("epoch 5,"):
            break
    store.unlink()
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert len(err.strip().splitlines()) == 1, err
    line = err.strip()
    assert line.startswith("lrlab: error: the store") and "not make it again" in line, line
    assert not store.exists()
