"""Every message is true and one line: compare and reproduce only read the store they are given, a wrong
id or a damaged record is one line, and a joblib worker that dies is a lost job. The real CLI in a subprocess,
against real SQLite stores."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.test_record import SOAK

pytestmark = pytest.mark.e2e

NO_SUCH_RUN = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Swept:
    """A finished sweep over two seeds: its parent, its one group run and its two seed runs."""

    folder: Path
    parent: str
    group: str
    jobs: tuple[str, ...]


def lrlab(
    module: str, *args: str, uri: str | None = None, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m lrlab.<module> ARGS`` with ``uri`` as $MLFLOW_TRACKING_URI (none: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if uri is not None:
        env["MLFLOW_TRACKING_URI"] = uri
    return subprocess.run(
        [sys.executable, "-m", f"lrlab.{module}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single error line on stderr, checked to be the whole of it."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("lrlab: error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def swept(store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Swept:
    folder = tmp_path_factory.mktemp("swept")
    shutil.copy(store_template, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    done = lrlab(
        "run", "-m", "seed=0,1", "lr=0.1", "dataset.num_examples=100", f"hydra.sweep.dir={folder}/multirun",
        uri=uri, cwd=folder, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = MlflowClient(uri).search_runs(["1"])
    (parent,) = [r for r in runs if r.data.tags.get("lrlab.sweep") == "true"]
    (group,) = [r for r in runs if r.data.tags.get("lrlab.group") == "true"]
    jobs = tuple(r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == group.info.run_id)
    assert len(jobs) == 2
    return Swept(folder, parent.info.run_id, group.info.run_id, jobs)


@pytest.fixture
def store(swept: Swept, tmp_path: Path) -> Path:
    """A copy of the swept store, artifacts included, in tmp_path/store: this test's to change."""
    copy = tmp_path / "store"
    copy.mkdir()
    shutil.copy(swept.folder / "mlflow.db", copy / "mlflow.db")
    shutil.copytree(swept.folder / "mlflow-artifacts", copy / "mlflow-artifacts")
    old, new = f"{swept.folder.as_uri()}/", f"{copy.as_uri()}/"
    with sqlite3.connect(copy / "mlflow.db") as db:  # the copy's artifacts, not the original's
        db.execute("update experiments set artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
    db.close()
    return copy / "mlflow.db"


def run_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        ids = {row[0] for row in conn.execute("select run_uuid from runs")}
    conn.close()
    return ids


# A mistyped store: compare and reproduce only read, so they refuse it and create nothing.


SOAK_ONLY = pytest.mark.soak_only  # make test keeps one case of each kind; make soak runs every pairing


@pytest.mark.parametrize(
    ("command", "given"),
    [
        ("compare", "flag"),
        ("reproduce", "environment"),
        ("compare", "missing folder"),
        pytest.param("compare", "environment", marks=SOAK_ONLY),
        pytest.param("reproduce", "flag", marks=SOAK_ONLY),
        pytest.param("reproduce", "missing folder", marks=SOAK_ONLY),
    ],
)
def test_a_mistyped_store_is_refused_and_not_created(command: str, given: str, tmp_path: Path) -> None:
    folder = tmp_path / "nosuch" if given == "missing folder" else tmp_path
    typo = folder / "typo.db"
    uri = f"sqlite:///{typo}"
    args = [NO_SUCH_RUN] if command == "reproduce" else []
    if given == "flag":
        done = lrlab(command, *args, "--tracking-uri", uri, cwd=tmp_path)
    else:
        done = lrlab(command, *args, uri=uri, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line(done)
    assert str(typo) in line and "no store" in line, line
    assert list(tmp_path.iterdir()) == []  # no store, no lock file, no folder: nothing at all


# A deleted experiment: compare says so in one line, never with an empty table; reproduce refuses it too.


def test_a_deleted_experiment_is_one_line(swept: Swept, store: Path) -> None:
    uri = f"sqlite:///{store}"
    MlflowClient(uri).delete_experiment("1")
    before = run_ids(store)
    for command, args in [("compare", ["lrlab"]), ("reproduce", [swept.jobs[0]])]:  # by name, and by a run in it
        done = lrlab(command, *args, "--tracking-uri", uri, cwd=store.parent)
        assert done.returncode == 2, (args, done.stdout + done.stderr)
        assert "Empty DataFrame" not in done.stdout and done.stdout == ""
        line = one_line(done)
        assert "'lrlab' is deleted" in line and "mlflow experiments restore --experiment-id 1" in line, line
    assert run_ids(store) == before


def test_compare_reads_a_store_it_cannot_write(swept: Swept, store: Path) -> None:
    """A store on a read-only file system (a read-only bind mount, in its own mount namespace: root ignores
    permission bits) is read as any other; reproduce, which must record a new run, refuses it in one line."""
    folder = store.parent
    read_only = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", read_only, "sh", str(folder), "sh", "-c", 'touch "$0"/x', str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"no read-only bind mount here (unshare -m): {probe.stderr.strip()[:200]}")
    before = run_ids(store)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    uri = f"sqlite:///{store}"

    def under_read_only(module: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", read_only, "sh", str(folder),
             sys.executable, "-m", f"lrlab.{module}", *args, "--tracking-uri", uri],
            cwd=folder.parent, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    shown = under_read_only("compare", swept.parent)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    header, *rows = shown.stdout.strip().splitlines()
    assert header.split()[:2] == ["group", "n"] and len(rows) == 1
    again = under_read_only("reproduce", swept.jobs[0])
    assert again.returncode == 2, again.stdout + again.stderr
    line = one_line(again)
    assert str(folder) in line and "writ" in line, line
    assert run_ids(store) == before


# reproduce: the wrong kind of run, a run whose record lost its config, a run that does not exist.


def test_reproduce_of_a_group_run_is_one_line(swept: Swept, store: Path) -> None:
    done = lrlab("reproduce", swept.group, "--tracking-uri", f"sqlite:///{store}", cwd=store.parent)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line(done)
    assert swept.group in line and "group" in line and any(job in line for job in swept.jobs), line
    assert run_ids(store) == run_ids(swept.folder / "mlflow.db")  # nothing ran


@pytest.mark.parametrize("removed", ["config.yaml", pytest.param("artifact folder", marks=SOAK_ONLY)])
def test_reproduce_of_a_run_without_its_config_is_one_line(removed: str, swept: Swept, store: Path) -> None:
    uri = f"sqlite:///{store}"
    job = swept.jobs[0]
    artifacts = Path(MlflowClient(uri).get_run(job).info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(store.parent) and (artifacts / "config.yaml").is_file()
    if removed == "config.yaml":
        (artifacts / "config.yaml").unlink()
    else:
        shutil.rmtree(artifacts)
    before = run_ids(store)
    for target in (job, swept.parent):  # the run itself, or the sweep it belongs to
        done = lrlab("reproduce", target, "--tracking-uri", uri, cwd=store.parent)
        assert done.returncode == 1, done.stdout + done.stderr
        line = one_line(done)
        assert job in line and "config.yaml" in line, line
        assert done.stdout == ""  # refused before anything ran
    assert run_ids(store) == before


@pytest.mark.parametrize(
    "run_id",
    [
        NO_SUCH_RUN,
        pytest.param("0123456789abcdef", marks=pytest.mark.soak_only),
        pytest.param("lr=0.1", marks=pytest.mark.soak_only),
    ],
)
def test_reproduce_of_a_wrong_run_id_is_one_line(run_id: str, store: Path) -> None:
    done = lrlab("reproduce", run_id, "--tracking-uri", f"sqlite:///{store}", cwd=store.parent)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_line(done)
    assert f"run_id={run_id!r}" in line and "no such run" in line, line


# A joblib worker killed mid-run: its job is lost, exit 1, and no run is left RUNNING.


@pytest.mark.soak
@pytest.mark.parametrize("attempt", SOAK)
def test_a_killed_joblib_worker_is_a_lost_job(tracking_uri: str, tmp_path: Path, attempt: int) -> None:
    command = [
        sys.executable, "-m", "lrlab.run", "-m", "lr=0.01,0.03", "launcher=joblib", "hydra.launcher.n_jobs=2",
        "dataset.num_examples=20000", "num_epochs=500", f"hydra.sweep.dir={tmp_path}/multirun",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONUNBUFFERED": "1"}
    sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(sweep.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any(line.startswith("epoch ") for line in printed):
            assert sweep.poll() is None, "".join(printed) + (sweep.stderr.read() if sweep.stderr else "")
            assert time.monotonic() < deadline, "no epoch printed"
            time.sleep(0.05)
        workers = [
            child
            for child in psutil.Process(sweep.pid).children(recursive=True)
            if "joblib.externals.loky.backend.popen_loky_posix" in child.cmdline()
        ]
        assert workers
        os.kill(workers[0].pid, signal.SIGKILL)
        _, err = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    reader.join(5)
    assert sweep.returncode == 1, "".join(printed) + err
    line = one_line(subprocess.CompletedProcess(command, sweep.returncode, "".join(printed), err))
    assert "worker died" in line and "SIGKILL" in line and "KILLED" in line, line
    runs = MlflowClient(tracking_uri).search_runs(["1"])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert killed and all(r.data.tags.get("lrlab.orphaned") for r in killed)
    (parent,) = [r for r in runs if r.data.tags.get("lrlab.sweep") == "true"]
    assert parent.info.status == "FAILED"
