"""``python -m lrlab.tools.benchmarks.server_load``: how many runs per second one ``make server`` (MLflow
over PostgreSQL) absorbs, with 1, 4 and 16 concurrent client processes, at ``--workers 1`` and ``--workers 4``.

What a run is, what each column means, and the figures measured: docs/scaling.md. A side whose cores near the
machine's, or 1 for a single-threaded part, is what saturates. Nothing here fails on a number."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path

import psutil

URI_LINE = re.compile(r"MLFLOW_TRACKING_URI=(\S+) \(backend (\S+), artifacts")
EPOCHS, METRICS, PARAMS = 10, ("train_loss", "w_error", "b_error"), 10


def one_run(client: object, experiment_id: str) -> None:
    """create_run, one log_batch (params and every epoch's metrics), set_terminated."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    assert isinstance(client, MlflowClient)
    run_id = client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    params = [Param(f"p{k}", str(k)) for k in range(PARAMS)]
    metrics = [Metric(key, 1.0 / step, now, step) for step in range(1, EPOCHS + 1) for key in METRICS]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.set_terminated(run_id)


def _client(uri: str, experiment_id: str, go: Event, seconds: float, results: multiprocessing.Queue[tuple]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    one_run(client, experiment_id)  # connections and caches warm before the window
    go.wait(60)
    cpu, deadline, done, errors = time.process_time(), time.monotonic() + seconds, 0, 0
    while time.monotonic() < deadline:
        try:
            one_run(client, experiment_id)
            done += 1
        except Exception:  # a refused or timed-out call: counted, the client goes on
            errors += 1
    results.put((done, errors, time.process_time() - cpu))


@dataclass
class Cell:
    label: str
    clients: int
    runs_per_second: float
    errors: int
    server_cores: float
    database_cores: float
    client_cores: float


def _cpu(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
        except psutil.Error:
            pass
    return seconds


def measure(label: str, uri: str, server: psutil.Process | None, clients: int, seconds: float) -> Cell:
    """``clients`` processes writing runs to ``uri`` for ``seconds``; CPU of each side over the window."""
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(uri).create_experiment(f"bench-{label}-{clients}-{time.time_ns()}")
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()
    workers = [context.Process(target=_client, args=(uri, experiment_id, go, seconds, results)) for _ in range(clients)]
    for worker in workers:
        worker.start()
    time.sleep(1.0 + 0.05 * clients)  # every client has written its warm-up run
    family = server.children(recursive=True) if server is not None else []
    tracking = [p for p in family if p.name() != "postgres"]
    database = [p for p in family if p.name() == "postgres"]
    before_tracking, before_database = _cpu(tracking), _cpu(database)
    start = time.monotonic()
    go.set()
    outcomes = [results.get(timeout=seconds + 120) for _ in workers]
    wall = time.monotonic() - start
    after_tracking, after_database = _cpu(tracking), _cpu(database)
    for worker in workers:
        worker.join(30)
    database_now = [p for p in (server.children(recursive=True) if server else []) if p.name() == "postgres"]
    after_database |= {pid: cpu for pid, cpu in _cpu(database_now).items() if pid not in before_database}

    def used(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items()) / wall

    return Cell(
        label,
        clients,
        sum(done for done, _, _ in outcomes) / wall,
        sum(errors for _, errors, _ in outcomes),
        used(before_tracking, after_tracking),
        used(before_database, after_database),
        sum(cpu for _, _, cpu in outcomes) / wall,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def lrlab_server(folder: Path, workers: int) -> Iterator[tuple[str, str, psutil.Process]]:
    """``python -m lrlab.tools.server`` on ``folder``: (tracking URI, backend URI, its process); SIGINT at the end."""
    command = [sys.executable, "-m", "lrlab.tools.server", "--dir", str(folder), "--port", str(_free_port())]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while not any(URI_LINE.search(line) for line in lines):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lrlab.tools.server did not start: {''.join(lines)[-500:]}")
            time.sleep(0.1)
        match = next(m for m in map(URI_LINE.search, lines) if m)
        yield match.group(1), match.group(2), psutil.Process(process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _row(cell: Cell, reference: float) -> str:
    ratio = f"{cell.runs_per_second / reference:.2f}x" if reference > 0 else "n/a"
    return (
        f"{cell.label:<24} {cell.clients:>7} {cell.runs_per_second:>9.1f} {ratio:>9} {cell.errors:>6} "
        f"{cell.server_cores:>9.2f} {cell.database_cores:>9.2f} {cell.client_cores:>9.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lrlab.tools.benchmarks.server_load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="the window each cell writes for (default 8)")
    parser.add_argument("--clients", default="1,4,16", help="client process counts (default 1,4,16)")
    parser.add_argument("--workers", default="1,4", help="the server's --workers values (default 1,4)")
    args = parser.parse_args(argv)
    from lrlab.tools.server import find_pg_bin

    if find_pg_bin() is None:
        print("PostgreSQL binaries missing: the benchmark needs them (apt-get install postgresql)")
        return 0
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    counts = [int(n) for n in args.clients.split(",")]
    cores = os.cpu_count() or 1
    print(f"{cores} cores; a run = create_run + log_batch({PARAMS} params, {len(METRICS)}x{EPOCHS} metrics) + ")
    print(f"set_terminated; {args.seconds:.0f} s per cell; cores = CPU seconds used per wall second\n")
    header = f"{'server':<24} {'clients':>7} {'runs/s':>9} {'vs direct':>9} {'errors':>6} "
    print(header + f"{'server':>9} {'database':>9} {'clients':>9}", flush=True)
    top = Path(tempfile.mkdtemp(prefix="lrlab-bench-server-"))
    top.chmod(0o711)  # PostgreSQL's unprivileged user reaches the cluster inside
    try:
        reference = 0.0
        for workers in (int(n) for n in args.workers.split(",")):
            with lrlab_server(top / "server", workers) as (uri, backend, process):
                if reference == 0.0:
                    try:
                        direct = measure("direct to PostgreSQL", backend, process, 1, args.seconds)
                        reference = direct.runs_per_second
                        print(_row(direct, reference), flush=True)
                    except Exception as error:  # report and go on
                        print(f"direct to PostgreSQL: error: {type(error).__name__}: {error}"[:300], flush=True)
                for clients in counts:
                    label = f"mlflow --workers {workers}"
                    try:
                        print(_row(measure(label, uri, process, clients, args.seconds), reference), flush=True)
                    except Exception as error:  # report and go on
                        print(f"{label} {clients}: error: {type(error).__name__}: {error}"[:300], flush=True)
    except Exception as error:
        print(f"error: {type(error).__name__}: {error}"[:300])
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
