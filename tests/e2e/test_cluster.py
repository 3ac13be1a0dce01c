"""Sweeps on Ray and submitit: the real CLI, a real Ray on 127.0.0.1, submitit's local executor and
``make server``'s MLflow server over PostgreSQL (tests/conftest.py). Every job attaches to the sweep's parent;
a worker killed mid-job leaves no RUNNING run, the other jobs finish, and the same command with ``rerun=false``
runs only the lost job.

One Ray (``ray start --head``) serves the module's sweeps, which join it through ``RAY_ADDRESS``: starting Ray
costs about 10 s here, and its workers, started by its raylet, do not inherit a sweep's environment, so the
sweep's parent run and tracking URI must travel with each job (lrlab/sweep/launchers/cluster.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.e2e.test_cli import all_runs
from tests.servers import LrlabServer, free_port

pytestmark = pytest.mark.e2e
RAY = str(Path(sys.executable).with_name("ray"))
LRS = "lr=0.01,0.02,0.03,0.04,0.05,0.06,0.07,0.08"
TINY = ["dataset.num_examples=100", "num_epochs=2"]
# Loopback only (Ray otherwise replaces 127.0.0.1 by the machine's address), no token: a test cluster.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def tracking_server(pg_server_module: LrlabServer) -> LrlabServer:
    """The tracking server the jobs write to: ``make server``'s (MLflow over PostgreSQL, artifacts served)."""
    assert pg_server_module.backend.startswith("postgresql")
    return pg_server_module


def _ray_processes(temp_dir: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            continue
    return found


RAY_QUIET = ["--include-dashboard=false", "--disable-usage-stats"]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A Ray head on 127.0.0.1 with 2 CPUs, stopped with every process it started."""
    temp_dir = tempfile.mkdtemp(prefix="lrray")  # short: Ray's socket paths must fit in 107 characters
    port = free_port()
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--block", *RAY_QUIET, f"--temp-dir={temp_dir}"],
        env={**os.environ, **RAY_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(Path(temp_dir).glob("session_*/logs/raylet.out")) and time.monotonic() < deadline:
            assert head.poll() is None, "ray start --head failed"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        # A test cluster has nothing to save: SIGKILL (a graceful stop of Ray's processes takes about 10 s),
        # the head's process group, then every process of this cluster (they carry its temp folder).
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        for process in _ray_processes(temp_dir):
            process.kill()
        _, alive = psutil.wait_procs(_ray_processes(temp_dir), timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not alive, f"Ray processes left: {[p.pid for p in alive]}"


def sweep(tmp_path: Path, uri: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "lrlab.run", "-m", *args, f"experiment_name={tmp_path.name}"]
    command += [f"hydra.run.dir={tmp_path}/out", f"hydra.sweep.dir={tmp_path}/multi"]
    return subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, **RAY_ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def sweep_runs(uri: str, name: str) -> tuple[Run, list[Run]]:
    """The newest sweep's parent in experiment ``name`` and its jobs."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000, order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "lrlab.sweep" in r.data.tags)
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, jobs


def assert_every_job_recorded(uri: str, jobs: list[Run], epochs: int) -> None:
    client = MlflowClient(uri)
    for job in jobs:
        for metric in ("train_loss", "w_error", "b_error", "excess_loss"):
            assert len(client.get_metric_history(job.info.run_id, metric)) == epochs, (job.info.run_name, metric)
        assert {a.path for a in client.list_artifacts(job.info.run_id)} >= {"config.yaml", "params.json"}


def test_a_ray_sweep_attaches_every_job_to_its_parent(
    tmp_path: Path, tracking_server: LrlabServer, ray_address: str
) -> None:
    out, err = finish(
        sweep(tmp_path, tracking_server.uri, "launcher=ray", LRS, *TINY, env={"RAY_ADDRESS": ray_address})
    )
    assert "Traceback" not in err, err[-3000:]
    parent, jobs = sweep_runs(tracking_server.uri, tmp_path.name)
    assert parent.info.status == "FINISHED"
    assert len(jobs) == 8 and {j.info.status for j in jobs} == {"FINISHED"}
    assert sorted(j.info.run_name for j in jobs) == [f"lr=0.0{i}" for i in range(1, 9)]
    assert_every_job_recorded(tracking_server.uri, jobs, epochs=2)
    assert "lr=0.08" in out  # the summary table


# Each submitit job is a process of its own that imports torch and MLflow (about 6 s of CPU): make test sweeps
# 4 jobs, make soak the 8 of the Ray sweep.
# make soak: each submitit job is a process that imports torch and MLflow (about 6 s of CPU); make test's
# launcher case is the Ray sweep, through the same code (lrlab/sweep/launchers/cluster.py).
@pytest.mark.soak_only
@pytest.mark.parametrize("lrs", ["lr=0.01,0.02,0.03,0.04", LRS])
def test_a_submitit_local_sweep_attaches_every_job_to_its_parent(
    tmp_path: Path, tracking_server: LrlabServer, lrs: str
) -> None:
    process = sweep(tmp_path, tracking_server.uri, "launcher=submitit_local", lrs, *TINY)
    _, err = finish(process)
    assert process.returncode == 0, err[-3000:]
    parent, jobs = sweep_runs(tracking_server.uri, tmp_path.name)
    assert parent.info.status == "FINISHED"
    assert len(jobs) == lrs.count(",") + 1 and {j.info.status for j in jobs} == {"FINISHED"}
    assert_every_job_recorded(tracking_server.uri, jobs, epochs=2)


@pytest.mark.soak_only  # make soak: two sweeps and a worker restart
def test_a_killed_ray_worker_ends_its_run_and_rerun_completes_only_it(
    tmp_path: Path, tracking_server: LrlabServer, ray_address: str
) -> None:
    # One job (lr=0.04) trains until it is killed: its num_epochs comes from a variable set only in the first
    # sweep's environment (an LRLAB_ variable, so it travels to the worker). The command is the same both times.
    epochs = "num_epochs='${oc.env:LRLAB_TEST_EPOCHS_${lr},2}'"
    args = ["launcher=ray", "lr=0.01,0.02,0.03,0.04", "dataset.num_examples=100", epochs, "rerun=false"]
    process = sweep(
        tmp_path, tracking_server.uri, *args, env={"RAY_ADDRESS": ray_address, "LRLAB_TEST_EPOCHS_0.04": "100000"}
    )
    assert process.stdout is not None
    worker = None
    deadline = time.monotonic() + 90
    while worker is None and time.monotonic() < deadline:  # the long job's worker, once it is past epoch 20
        line = process.stdout.readline()
        assert line, "the sweep ended before the long job trained"
        match = re.search(r"pid=(\d+)\).*epoch [2-9]\d,", line)
        worker = int(match.group(1)) if match else None
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    out, err = finish(process)
    assert process.returncode == 1, err[-3000:]
    lines = [line for line in err.strip().splitlines() if line.startswith("lrlab:")]
    assert len(lines) == 1 and "1 job(s) lost" in lines[0] and "lr=0.04" in lines[0], err[-3000:]
    parent, jobs = sweep_runs(tracking_server.uri, tmp_path.name)
    assert parent.info.status == "FAILED"
    status = {j.info.run_name: j.info.status for j in jobs}
    assert status.pop("lr=0.04") in ("FAILED", "KILLED")
    assert len(status) == 3 and set(status.values()) == {"FINISHED"}

    again = sweep(tmp_path, tracking_server.uri, *args, env={"RAY_ADDRESS": ray_address})
    out, err = finish(again)
    assert again.returncode == 0, err[-3000:]
    assert out.count("skipped lr=") == 3
    parent, jobs = sweep_runs(tracking_server.uri, tmp_path.name)
    assert parent.info.status == "FINISHED"
    assert [(j.info.run_name, j.info.status) for j in jobs] == [("lr=0.04", "FINISHED")]


def test_a_ray_address_where_nothing_answers_is_one_line_and_no_run_stays_running(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], client: MlflowClient
) -> None:
    # ray.init would retry for minutes in native code, deaf to Ctrl-C; the launcher refuses the address at once.
    address = f"127.0.0.1:{free_port()}"
    done = run_cli("-m", "launcher=ray", "lr=0.01,0.03", f"hydra.launcher.ray.init.address={address}", timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert line == f"lrlab: error: hydra.launcher.ray.init.address={address}: no Ray cluster answers there " + (
        "(Connection refused)"
    )
    assert [(r.info.run_name, r.info.status) for r in all_runs(client)] == [("sweep lr=0.01,0.03", "FAILED")]
