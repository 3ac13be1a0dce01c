"""Nothing lost, nothing left RUNNING: parallel, interrupted, crashed and cut-off sweeps.

Every test ends by reading the real store: no run is RUNNING, and every epoch printed is stored.
Cases marked ``soak`` repeat ``LRLAB_SOAK`` times under ``make soak`` (once in ``make test``).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lrlab.record.orphans import end_orphans
from tests.conftest import REPO
from tests.e2e.test_cli import all_runs as runs_in
from tests.servers import server

pytestmark = pytest.mark.e2e
SOAK = range(int(os.environ.get("LRLAB_SOAK", "1")))
STARTERS = 6 if len(SOAK) > 1 else 3  # processes racing to create one new store (make soak: 6)
LONG = ["num_epochs=100000", "dataset.num_examples=200"]  # a job that runs until it is stopped


def all_runs(uri: str) -> list[Run]:
    return runs_in(MlflowClient(uri))


def stored_epochs(uri: str, runs: list[Run]) -> int:
    client = MlflowClient(uri)
    return sum(len(client.get_metric_history(r.info.run_id, "train_loss")) for r in runs)


def printed_epochs(stdout: str) -> int:
    return sum(1 for line in stdout.splitlines() if line.startswith("epoch "))


def assert_nothing_running_and_nothing_lost(uri: str, stdout: str) -> list[Run]:
    runs = all_runs(uri)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert printed_epochs(stdout) <= stored_epochs(uri, runs)  # printed only once written
    return runs


def cli(tmp_path: Path, uri: str, *args: str, new_session: bool = False) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "lrlab.run", *args]
    command += [f"hydra.run.dir={tmp_path}/out", f"hydra.sweep.dir={tmp_path}/multi"]
    return subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def read_until(process: subprocess.Popen[str], epochs: int) -> list[str]:
    """Read stdout until ``epochs`` epoch lines have been printed (training is under way)."""
    assert process.stdout is not None
    seen: list[str] = []
    while sum(line.startswith("epoch ") for line in seen) < epochs:
        line = process.stdout.readline()
        assert line, "the process ended before training was under way"
        seen.append(line)
    return seen


@pytest.mark.soak
@pytest.mark.parametrize("attempt", SOAK)
# Ctrl-C to the group covers SIGTERM to main: the main process forwards the stop as SIGTERM to its workers
# (which ignore the terminal's SIGINT); SIGTERM straight to main is the variant make soak adds.
@pytest.mark.parametrize("how", [pytest.param("SIGTERM to main", marks=pytest.mark.soak_only), "Ctrl-C to the group"])
def test_interrupted_joblib_sweep_ends_every_run_killed_with_its_epochs(tmp_path: Path, how: str, attempt: int) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = cli(
        tmp_path, uri, "-m", "launcher=joblib", "hydra.launcher.n_jobs=2", "lr=0.01,0.02,0.03", *LONG, new_session=True
    )
    head = read_until(process, 30)
    if how == "SIGTERM to main":
        process.send_signal(signal.SIGTERM)
    else:  # what the terminal does: SIGINT to every process of the foreground group, workers included
        os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    runs = assert_nothing_running_and_nothing_lost(uri, "".join(head) + out)
    assert {r.info.status for r in runs} == {"KILLED"}
    jobs = [r for r in runs if "lrlab.sweep" not in r.data.tags]
    assert jobs and all("lrlab.stopped" in r.data.tags for r in jobs)
    assert stored_epochs(uri, jobs) >= 30
    assert "Traceback" not in err and "Exception ignored" not in err


@pytest.mark.soak
@pytest.mark.parametrize("attempt", SOAK)
def test_concurrent_starts_on_a_new_store(tmp_path: Path, attempt: int) -> None:
    db = tmp_path / "new" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "barrier_cli.py"),
                f"lr=0.0{i + 1}",
                f"hydra.run.dir={tmp_path}/o{i}",
            ],
            cwd=tmp_path,
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(STARTERS)
    ]
    for process in processes:  # every one has imported lrlab and waits
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    for process in processes:  # go, all at once
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    done = [(p.communicate(timeout=120), p.returncode) for p in processes]
    assert all(code == 0 for _, code in done), [err for (_, err), code in done if code]
    runs = assert_nothing_running_and_nothing_lost(uri, "".join(out for (out, _), _ in done))
    assert len(runs) == STARTERS and {r.info.status for r in runs} == {"FINISHED"}
    assert not list(db.parent.glob(".*.creating"))  # no half-made store left behind


@pytest.mark.soak
@pytest.mark.parametrize("attempt", SOAK)
def test_a_kill_during_store_creation_leaves_no_store_or_a_whole_one(tmp_path: Path, attempt: int) -> None:
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    delay = 0.1 + 0.15 * (attempt % 10)  # across the ~1.3 s that creating a store takes
    creator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from lrlab.record.store import open_client; import sys; print('ready', flush=True); "
            "open_client(sys.argv[1]).search_experiments()",
            uri,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert creator.stdout is not None and creator.stdout.readline() == "ready\n"
    time.sleep(delay)
    creator.kill()
    creator.wait()
    if db.exists():  # complete: MLflow's own tables and schema version are all there
        with sqlite3.connect(db) as connection:
            tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
        assert {"alembic_version", "experiments", "runs", "metrics", "datasets"} <= tables
    run = cli(tmp_path, uri, "num_epochs=1")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    (finished,) = assert_nothing_running_and_nothing_lost(uri, out)
    assert finished.info.status == "FINISHED"


@pytest.mark.soak
@pytest.mark.parametrize("attempt", SOAK)
def test_parallel_jobs_into_a_fresh_store_share_one_dataset(tmp_path: Path, attempt: int) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lrs = ",".join(f"0.0{i}" for i in range(1, 5))
    process = cli(tmp_path, uri, "-m", "launcher=joblib", "hydra.launcher.n_jobs=2", f"lr={lrs}")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "IntegrityError" not in err and "database is locked" not in err
    runs = assert_nothing_running_and_nothing_lost(uri, out)
    jobs = [r for r in runs if "lrlab.sweep" not in r.data.tags]
    assert len(jobs) == 4 and {r.info.status for r in jobs} == {"FINISHED"}
    digests = {i.dataset.digest for r in runs for i in r.inputs.dataset_inputs}
    assert len(digests) == 1  # one dataset, created once by the parent and linked by every job


def test_a_second_signal_forces_the_exit(tmp_path: Path) -> None:
    # Code that never checks the flag (a stuck library call): the first Ctrl-C only asks, the second forces.
    stuck = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from lrlab.sweep import interrupt; interrupt.install(); "
            "print('ready', flush=True)\nwhile True: time.sleep(0.01)",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert stuck.stdout is not None and stuck.stdout.readline() == "ready\n"
    stuck.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert stuck.poll() is None  # asked, not forced
    stuck.send_signal(signal.SIGINT)
    _, err = stuck.communicate(timeout=10)
    assert stuck.returncode != 0 and "KeyboardInterrupt: SIGINT again: forced" in err


def test_a_sweep_whose_end_fails_still_ends_its_parent(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "mlflow-artifacts").write_text("not a folder")  # every artifact write fails, the summary's too
    process = cli(tmp_path, uri, "-m", "lr=0.01,0.03")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert err.strip().splitlines()[-1] == f"lrlab: error: Not a directory: {tmp_path}/mlflow-artifacts/1"
    assert "Traceback" not in err
    runs = assert_nothing_running_and_nothing_lost(uri, out)
    assert {r.info.status for r in runs} == {"FAILED"} and len(runs) == 3


def test_a_launcher_that_rejects_its_settings_after_the_parent_exists(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = cli(tmp_path, uri, "-m", "launcher=joblib", "hydra.launcher.n_jobs=0", "lr=0.01,0.03")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("lrlab: error: hydra.launcher: ") and "n_jobs == 0" in line
    (parent,) = assert_nothing_running_and_nothing_lost(uri, "")
    assert parent.info.status == "FAILED"


@pytest.mark.soak
@pytest.mark.parametrize("attempt", SOAK)
def test_sigkill_leaves_a_run_that_the_next_start_ends_as_an_orphan(tmp_path: Path, attempt: int) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = cli(tmp_path, uri, *LONG)
    head = read_until(process, 20)
    process.kill()  # the OOM killer, a preempted node: nothing runs after this
    out, _ = process.communicate(timeout=30)
    (run,) = all_runs(uri)
    assert run.info.status == "RUNNING"  # nothing can end it from inside
    assert printed_epochs("".join(head) + out) <= stored_epochs(uri, [run])  # still: printed means stored
    tags = run.data.tags
    assert tags["lrlab.pid"] == str(process.pid) and tags["lrlab.host"] and float(tags["lrlab.pid_started"]) > 0

    again = cli(tmp_path, uri, "num_epochs=1")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert (
        f"lrlab: ended 1 orphaned run(s) KILLED (their process is gone; tag lrlab.orphaned): {run.info.run_name}" in out
    )
    orphan = MlflowClient(uri).get_run(run.info.run_id)
    assert orphan.info.status == "KILLED"
    assert orphan.data.tags["lrlab.orphaned"].startswith(f"process {process.pid} on {tags['lrlab.host']} is gone")
    assert_nothing_running_and_nothing_lost(uri, out)


# The basic launcher writes from the sweep's own process; joblib's workers (make soak) from worker processes.
@pytest.mark.parametrize("launcher", ["basic", pytest.param("joblib", marks=pytest.mark.soak_only)])
def test_a_server_that_dies_mid_sweep(tmp_path: Path, launcher: str) -> None:
    mlflow = server(tmp_path / "server")
    try:
        process = cli(tmp_path, mlflow.uri, "-m", f"launcher={launcher}", "lr=0.01,0.02,0.03,0.04", "num_epochs=3000")
        head = read_until(process, 20)
        mlflow.stop()
        _, err = process.communicate(timeout=60)  # "within a minute": a guard against MLflow's long retries
        assert process.returncode == 1, err
        (line,) = err.strip().splitlines()  # one line, no traceback spam
        assert line.startswith(f"lrlab: error: the tracking server {mlflow.uri} stopped answering")

        # The server is gone; its own store shows what it holds: the runs it was writing are still RUNNING,
        # with every printed epoch. The next start ends them through end_orphans, which every start calls
        # (the CLI's side of that is the SIGKILL case above); restarting the server would only cost time.
        store = f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}"
        left = [r for r in all_runs(store) if r.info.status == "RUNNING"]
        assert left and printed_epochs("".join(head)) <= stored_epochs(store, left)
        experiments = {r.info.experiment_id for r in left}
        ended = [run for e in experiments for run in end_orphans(MlflowClient(store), e, orphan_timeout=900)]
        assert {r.info.run_id for r in ended} == {r.info.run_id for r in left}
        runs = assert_nothing_running_and_nothing_lost(store, "".join(head))
        assert {r.info.run_id for r in runs if "lrlab.orphaned" in r.data.tags} == {r.info.run_id for r in left}
    finally:
        mlflow.stop()
