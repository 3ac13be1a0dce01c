"""``python -m lrlab.tools.server`` (``make server``): a real PostgreSQL cluster, a real mlflow server, the real CLI.

One server (the module-scoped ``pg_server``) serves the sweep and the stop-and-restart test; the SQLite
fallback and the refusals start processes of their own. Every wait is bounded and every process is stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil
import psycopg2
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from lrlab.tools.server import PG_BIN_ENV, Cluster, find_pg_bin, pg_user
from tests.servers import LrlabServer, free_port, lrlab_server, reachable_folder

pytestmark = pytest.mark.e2e


def postgres_on(data: Path) -> list[psutil.Process]:
    """Every process running PostgreSQL on the cluster in ``data``."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(data) in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def test_a_sweep_lands_in_the_postgresql_store(pg_server: LrlabServer, tmp_path: Path) -> None:
    experiment = f"server-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "lrlab.run", "-m", "lr=0.01,0.03", "dataset.num_examples=100", "num_epochs=2"]
    command += [f"tracking_uri={pg_server.uri}", f"experiment_name={experiment}", f"hydra.sweep.dir={tmp_path}/m"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    client = MlflowClient(pg_server.uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("lrlab.sweep") == "true"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(run.data.params["lr"] for run in children) == ["0.01", "0.03"]
    for child in children:
        assert child.info.status == "FINISHED"
        for key in ("train_loss", "w_error", "b_error", "excess_loss"):
            assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == [1, 2], key
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"config.yaml", "params.json"}
        assert (pg_server.folder / "artifacts" / experiment_id / child.info.run_id / "artifacts/config.yaml").is_file()
    assert "summary.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    # The store really is the PostgreSQL cluster in DIR/pg: read the runs from its tables directly.
    assert pg_server.backend.startswith("postgresql")
    assert (pg_server.folder / "pg" / "PG_VERSION").is_file()
    socket_dir = parse_qs(urlsplit(pg_server.backend).query)["host"][0]
    with psycopg2.connect(dbname="mlflow", user="lrlab", host=socket_dir) as db, db.cursor() as cursor:
        cursor.execute("SELECT run_uuid, status FROM runs WHERE experiment_id = %s", (int(experiment_id),))
        assert dict(cursor.fetchall()) == {run.info.run_id: "FINISHED" for run in runs}
    db.close()


def test_an_optuna_study_lives_in_the_same_postgresql_database_and_resumes(
    pg_server: LrlabServer, tmp_path: Path
) -> None:
    """A postgresql store keeps its sweep's Optuna study in the same database, schema lrlab_optuna; the same command
    again finds the study there and runs nothing new."""
    experiment = f"optuna-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "lrlab.run", "-m", "hydra/sweeper=optuna", "lr=interval(0.01,0.3)"]
    command += ["hydra.sweeper.n_trials=2", "num_epochs=1", "dataset.num_examples=100"]
    command += [f"experiment_name={experiment}", f"hydra.sweep.dir={tmp_path}/m"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": pg_server.backend}  # its ?host=... would need quoting in an override
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    socket_dir = parse_qs(urlsplit(pg_server.backend).query)["host"][0]
    with psycopg2.connect(dbname="mlflow", user="lrlab", host=socket_dir) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT t.state FROM lrlab_optuna.trials t JOIN lrlab_optuna.studies s USING (study_id)"
            " WHERE s.study_name = %s",
            (experiment,),
        )
        assert sorted(state for (state,) in cursor.fetchall()) == ["COMPLETE", "COMPLETE"]
    db.close()
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 of 2 trial(s) done; nothing to run" in again.stdout, again.stdout[-2000:]


def test_sigint_stops_everything_and_the_cluster_keeps_its_data(pg_server: LrlabServer) -> None:
    kept = f"kept-{uuid.uuid4().hex[:8]}"
    MlflowClient(pg_server.uri).create_experiment(kept)
    started = pg_server.descendants()
    assert {p.name() for p in started} >= {"postgres"}, "PostgreSQL runs under the server"
    cluster_made = (pg_server.folder / "pg" / "PG_VERSION").stat().st_mtime_ns

    begin = time.monotonic()
    assert pg_server.stop(signal.SIGINT, timeout=60) == 0
    assert time.monotonic() - begin < 30
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    assert not postgres_on(pg_server.folder / "pg")

    # A second start reuses the cluster and its data: the cluster part of it, the same code, without the
    # seconds that mlflow server's start costs (the next test that needs the server starts it whole).
    cluster = Cluster(pg_server.folder, find_pg_bin() or Path("/nonexistent"), pg_user())
    try:
        assert cluster.create() is False
        socket_dir = parse_qs(urlsplit(cluster.start()).query)["host"][0]
        with psycopg2.connect(dbname="mlflow", user="lrlab", host=socket_dir) as db, db.cursor() as cursor:
            cursor.execute("SELECT lifecycle_stage FROM experiments WHERE name = %s", (kept,))
            assert cursor.fetchall() == [("active",)]
        db.close()
    finally:
        cluster.stop()
    assert (pg_server.folder / "pg" / "PG_VERSION").stat().st_mtime_ns == cluster_made
    assert not postgres_on(pg_server.folder / "pg")


def test_without_postgresql_binaries_it_serves_sqlite(store_template: Path) -> None:
    folder = reachable_folder("lrlab-sqlite-")
    store = folder / "server" / "mlflow.db"
    store.parent.mkdir()
    shutil.copy(store_template, store)  # migrated already: the server's start skips MLflow's migrations
    server = None
    try:
        server = lrlab_server(folder / "server", env={PG_BIN_ENV: "/nonexistent"})
        notes = [line for line in server.output if "no PostgreSQL binaries" in line]
        assert len(notes) == 1 and f"serving the SQLite store {store}" in notes[0], server.output
        assert server.backend == f"sqlite:///{store}"
        client = MlflowClient(server.uri)
        run = client.create_run(client.create_experiment("fallback"))
        client.log_batch(run.info.run_id, metrics=[Metric("x", 1.0, 0, 1)])
        client.set_terminated(run.info.run_id)
        with closing(sqlite3.connect(store)) as db:
            assert db.execute("SELECT status FROM runs WHERE run_uuid = ?", (run.info.run_id,)).fetchall() == [
                ("FINISHED",)
            ]
        assert not (folder / "server" / "pg").exists()
        assert server.stop(signal.SIGTERM, timeout=60) == 0
    finally:
        if server is not None:
            server.stop(signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    """A port in use, a folder that cannot be made: one line naming the key, exit 2, nothing started."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", free_port()))
    listener.listen()
    port = listener.getsockname()[1]
    (tmp_path / "file").write_text("")
    cases = {
        "--port": ["--port", str(port), "--dir", str(tmp_path / "a")],
        "--dir": ["--port", str(free_port()), "--dir", str(tmp_path / "file" / "server")],
    }
    try:
        for key, args in cases.items():
            done = subprocess.run(
                [sys.executable, "-m", "lrlab.tools.server", *args],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={**os.environ, PG_BIN_ENV: "/nonexistent"},
            )
            assert done.returncode == 2, done.stderr
            assert done.stderr.startswith(f"lrlab server: error: {key} ") and done.stderr.count("\n") == 1
            assert "Traceback" not in done.stderr + done.stdout
    finally:
        listener.close()
