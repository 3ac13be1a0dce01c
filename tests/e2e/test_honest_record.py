"""The record says what ran: the real CLI against a real store, read back key by key."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.e2e.test_cli import all_runs, final
from tests.servers import ADMIN, ADMIN_PASSWORD, server

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_a_command_line_choice_beats_the_study_in_param_config_and_computation(
    run_cli: Cli, client: MlflowClient
) -> None:
    # scratch_vs_concise picks the squared loss; loss=mse on the command line must win, everywhere.
    one_job = [
        "hydra.sweeper.params.model=scratch",
        "hydra.sweeper.params.optimizer=sgd_scratch",
        "hydra.sweeper.params.seed=0",
    ]
    done = run_cli("experiment=scratch_vs_concise", "loss=mse", *one_job)
    assert done.returncode == 0, done.stderr
    (job,) = [r for r in all_runs(client) if "lrlab.sweep" not in r.data.tags]
    assert job.data.params["loss"] == "mse" and job.data.params["loss.name"] == "mse"
    logged = yaml.safe_load(Path(client.download_artifacts(job.info.run_id, "config.yaml")).read_text())
    assert logged["loss"]["name"] == "mse"
    # The computation: under mse the Hessian doubles (lr_critical_gd ≈ 1, not ≈ 2) and the floor is σ², not σ²/2.
    assert 0.75 < final(client, job, "lr_critical_gd") < 1.25
    assert 5e-5 < final(client, job, "ols_train_loss") < 2e-4


def test_artifacts_land_beside_the_store_wherever_lrlab_starts(tmp_path: Path) -> None:
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir(), elsewhere.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "lrlab.run", f"hydra.run.dir={tmp_path}/out"],
        cwd=elsewhere,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (run,) = all_runs(MlflowClient(uri))
    assert run.info.artifact_uri.startswith((store / "mlflow-artifacts").as_uri())
    assert (
        store / "mlflow-artifacts" / run.info.experiment_id / run.info.run_id / "artifacts" / "config.yaml"
    ).is_file()
    assert not (elsewhere / "mlruns").exists() and not (elsewhere / "mlflow-artifacts").exists()


def test_conclusions_come_only_from_finished_runs(run_cli: Cli, client: MlflowClient, tmp_path: Path) -> None:
    # Two sizes finish and one diverges (a threshold that only the smallest set's first epoch passes, at
    # loss 13): a line through the two that finished is not a slope. Under Hydra's own sweeper, which
    # composes each job itself (lrlab's, the default, composes each once: tests/unit/test_identity.py).
    args = ("dataset.num_examples=20,1000,3000", "dataset.noise_std=1", "divergence_threshold=5")
    done = run_cli("-m", *args, "hydra/sweeper=basic")
    assert done.returncode == 0, done.stderr
    sweeper = OmegaConf.load(tmp_path / "multirun" / "multirun.yaml").hydra.sweeper._target_
    assert sweeper == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    (parent,) = [r for r in all_runs(client) if r.data.tags.get("lrlab.sweep") == "true"]
    statuses = sorted(r.info.status for r in all_runs(client) if r.info.run_id != parent.info.run_id)
    assert statuses == ["FAILED", "FINISHED", "FINISHED"], done.stdout
    assert "error_slope" not in parent.data.metrics
    assert "no error slope: it needs at least 3 sizes that finished (2 did)" in done.stdout
    # A diverged job fails alone, keeps what it logged, and leaves the sweep FINISHED with exit 0.
    (diverged,) = [r for r in all_runs(client) if r.info.status == "FAILED"]
    assert diverged.info.run_name == "dataset.num_examples=20" and diverged.data.tags["lrlab.diverged"] == "true"
    assert diverged.data.tags["lrlab.diverged_epoch"] == "1"
    assert client.get_metric_history(diverged.info.run_id, "train_loss")
    assert parent.info.status == "FINISHED"
    summary = done.stdout.split("status")[-1]
    assert "DIVERGED" in summary and summary.count("FINISHED") == 2


def test_a_basic_auth_server_works_and_the_password_appears_nowhere(tmp_path: Path) -> None:
    mlflow = server(tmp_path / "server", auth=True)
    host = mlflow.uri.removeprefix("http://")

    def lrlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "lrlab.run", *args, f"hydra.sweep.dir={tmp_path}/multi"]
        command += [f"hydra.run.dir={tmp_path}/out"]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")} | (env or {})
        return subprocess.run(command, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300)

    try:
        in_uri = lrlab("-m", "lr=0.01,0.03", f"tracking_uri=http://{ADMIN}:{ADMIN_PASSWORD}@{host}")
        assert in_uri.returncode == 0, in_uri.stderr
        in_env = lrlab(
            f"tracking_uri={mlflow.uri}",
            env={"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD},
        )
        assert in_env.returncode == 0, in_env.stderr
        wrong = lrlab(f"tracking_uri=http://{ADMIN}:wrong-password-xyz@{host}")
        assert wrong.returncode == 2
        (line,) = wrong.stderr.strip().splitlines()
        assert "the server refused the credentials (HTTP 401)" in line and "wrong-password-xyz" not in line

        for done in (in_uri, in_env, wrong):  # the console
            assert ADMIN_PASSWORD not in done.stdout + done.stderr
        os.environ.update(MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD)
        try:
            runs = all_runs(MlflowClient(mlflow.uri))
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
        for run in runs:  # run names, tags, params
            record = [run.info.run_name, *run.data.tags.values(), *run.data.params.values()]
            assert not [v for v in record if ADMIN_PASSWORD in str(v)]
        # The server's own files: its database and every artifact (config.yaml, summaries...).
        stored = [p for p in (tmp_path / "server").rglob("*") if p.is_file() and p.name != "basic_auth.ini"]
        assert any(p.name == "summary.csv" for p in stored) and any(p.name == "config.yaml" for p in stored)
        assert not [p for p in stored if ADMIN_PASSWORD.encode() in p.read_bytes()]
        # Hydra's own files: each job's .hydra/*.yaml and the sweep's multirun.yaml, private where they had one.
        written = [p for folder in ("multi", "out") for p in (tmp_path / folder).rglob("*.yaml")]
        assert {"multirun.yaml", "overrides.yaml", "hydra.yaml", "config.yaml"} <= {p.name for p in written}
        assert not [p for p in written if ADMIN_PASSWORD in p.read_text()]
        assert (tmp_path / "multi" / "multirun.yaml").stat().st_mode & 0o077 == 0
    finally:
        mlflow.stop()
