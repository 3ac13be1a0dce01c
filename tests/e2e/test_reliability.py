"""Divergence, crashes, interrupts, bad input, a down server and parallel writers: nothing is lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.e2e.test_cli import all_runs
from tests.e2e.test_record import SOAK, cli

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]


def by_name(runs: list[Run]) -> dict[str, Run]:
    return {str(r.info.run_name): r for r in runs}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The one table of bad input: each is one line on stderr naming the key, exit 2, and no run in the store.
# {tmp} is the test's folder, which holds corrupt.db (not a database) and folder.db (a folder).
BAD_INPUT = [
    ("lr=-1", "lr"),
    ("lr=0", "lr"),
    ("lr=nan", "lr"),
    ("lr=abc", "lr"),
    ("lr=", "lr"),
    ("lr=[1,2]", "lr"),
    ("batch_size=0", "batch_size"),
    ("batch_size=5000", "batch_size"),
    ("num_epochs=0", "num_epochs"),
    ("num_epochs=1.5", "num_epochs"),
    ("dataset.num_examples=-5", "dataset.num_examples"),
    ("dataset.noise_std=-1", "dataset.noise_std"),
    ("dataset.true_w=[]", "dataset.true_w"),
    ("dataset.true_w=[1,x]", "dataset.true_w"),
    ("dataset.true_w=3", "dataset.true_w"),
    ("optimizer.momentum=1.5", "optimizer.momentum"),
    ("model.init_std=-1", "model.init_std"),
    ("seed=-1", "seed"),
    ("seed=18446744073709551616", "seed"),  # past 64 bits
    ("data_seed=18446744073709551616", "data_seed"),
    ("orphan_timeout=0", "orphan_timeout"),
    ("experiment_name=" + "x" * 501, "experiment_name"),  # past MLflow's limit
    ("model=foo", "model"),
    ("model=", "model"),
    ("device=tpu", "device"),
    ("engine=turbo", "engine"),
    ("engine.name=turbo", "engine.name"),
    ("engine=compiled device=auto", "engine"),  # the compiled engine runs on the CPU only
    ("experiment=null", "experiment"),
    ("experiment=nosuch", "experiment"),
    ("optimizr=sgd", "optimizr"),
    ("lrr=0.1", "lrr"),
    ("+lrr=0.1", "lrr"),  # even with +
    ("++dataset.size=3", "dataset.size"),
    ("loss=mse loss.name=squared", "loss.name"),  # a choice and a name that disagree
    ("=3", "override"),
    ("tracking_uri=sqlite:////no/such/folder/mlflow.db", "tracking_uri"),
    ("tracking_uri=sqlite:///{tmp}/corrupt.db", "tracking_uri"),
    ("tracking_uri=sqlite:///{tmp}/folder.db", "tracking_uri"),
    ("tracking_uri=file://{tmp}/mlruns", "tracking_uri"),  # MLflow 3 has no file store
    ("tracking_uri=postgresql://lrlab:secret@127.0.0.1/db", "tracking_uri"),  # no driver installed
    ("tracking_uri=nosuch://store", "tracking_uri"),
    ("tracking_uri=sqlite:///{tmp}/fifo.db", "tracking_uri"),  # not a regular file: never replaced
    ("tracking_uri=sqlite:////proc/version", "tracking_uri"),
    ("tracking_uri=sqlite:///{tmp}/q.db?mode=ro", "tracking_uri"),
    ("tracking_uri=", "tracking_uri"),
    ("tracking_uri=databricks", "tracking_uri"),
    ("hydra.callbacks.lrlab=null", "hydra.callbacks.lrlab"),  # the callback that keeps the record stays
    ("~hydra.callbacks.lrlab", "hydra.callbacks.lrlab"),
    ("--config-name nosuch", "config-name"),
    ("lr=0.1,", "lr"),
    ("-m seed=range(0,100000000)", "seed"),  # too many jobs to plan
    ("-m lr=choice()", "lr"),
    ("-m lr=0.1,-1", "lr"),  # one bad job refuses the whole sweep before any run
    ("-m lr=interval(0,1)", "lr"),  # the basic sweeper cannot run it
    ("-m lr=tag(a,0.1)", "lr"),
    ("-m model=glob(nosuch*)", "model"),
    ("-m lr=range(1,1)", "lr"),
    ("-m launcher=joblib hydra.launcher.n_jobs=1,abc", "hydra.launcher.n_jobs"),
    ("replicates=0", "replicates"),
    ("replicates=two", "replicates"),
    ("replicates=3 seed=1", "replicates"),  # seeds given twice
]


@pytest.mark.parametrize(("override", "key"), BAD_INPUT, ids=[b[0][:60] for b in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_key_and_leaves_no_run(
    run_cli: Cli, client: MlflowClient, tmp_path: Path, override: str, key: str
) -> None:
    (tmp_path / "corrupt.db").write_text("not a database")
    (tmp_path / "folder.db").mkdir()
    os.mkfifo(tmp_path / "fifo.db")
    done = run_cli(*override.format(tmp=tmp_path).split())
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrlab: error: "), done.stderr
    assert key in lines[0] and "Traceback" not in done.stderr and "secret" not in done.stderr
    assert all_runs(client) == []
    assert (tmp_path / "fifo.db").is_fifo() and Path("/proc/version").exists()


def test_crashed_job_fails_with_its_error_the_rest_run_and_the_sweep_exits_1(
    run_cli: Cli, client: MlflowClient
) -> None:
    # 10**12 examples cannot be allocated: a real crash inside the job, not a config error.
    done = run_cli("-m", "dataset.num_examples=1000,1000000000000")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("lrlab: error: 1 job(s) failed")
    runs = by_name(all_runs(client))
    crashed = runs["dataset.num_examples=1000000000000"]
    assert crashed.info.status == "FAILED" and "lrlab.error" in crashed.data.tags
    assert "error.txt" in {a.path for a in client.list_artifacts(crashed.info.run_id)}
    assert runs["dataset.num_examples=1000"].info.status == "FINISHED"
    assert runs["sweep dataset.num_examples=1000,1000000000000"].info.status == "FAILED"


@pytest.mark.soak
@pytest.mark.parametrize("attempt", SOAK)
# make test: a single run stopped by SIGTERM (a scheduler) and a sweep over seeds by Ctrl-C (one handler for
# both signals); make soak adds the other two pairings.
@pytest.mark.parametrize(
    ("sweep", "signum"),
    [
        pytest.param(False, signal.SIGTERM, id="run-SIGTERM"),
        pytest.param(True, signal.SIGINT, id="sweep-SIGINT"),
        pytest.param(False, signal.SIGINT, id="run-SIGINT", marks=pytest.mark.soak_only),
        pytest.param(True, signal.SIGTERM, id="sweep-SIGTERM", marks=pytest.mark.soak_only),
    ],
)
def test_interrupt_ends_the_run_killed(
    tmp_path: Path, tracking_uri: str, signum: int, sweep: bool, attempt: int
) -> None:
    # The SIGINT sweep varies seeds too, so its jobs run under group runs (sweep -> group -> seed run).
    args = (["-m", "lr=0.03,0.01"] + (["seed=0,1"] if signum == signal.SIGINT else [])) if sweep else []
    process = cli(tmp_path, tracking_uri, *args, "num_epochs=100000", "dataset.num_examples=200")
    assert process.stdout is not None
    for line in process.stdout:  # wait until training is under way
        if line.startswith("epoch 5,"):
            break
    process.send_signal(signum)
    process.communicate(timeout=60)  # a guard against a hang, not a timing
    assert process.returncode == 130
    runs = all_runs(MlflowClient(tracking_uri))
    assert runs and all(r.info.status == "KILLED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    job = next(r for r in runs if "lrlab.sweep" not in r.data.tags and "lrlab.group" not in r.data.tags)
    assert len(MlflowClient(tracking_uri).get_metric_history(job.info.run_id, "train_loss")) >= 5
    if sweep and signum == signal.SIGINT:
        groups = {r.info.run_name: r for r in runs if r.data.tags.get("lrlab.group") == "true"}
        assert sorted(groups) == ["lr=0.01", "lr=0.03"]  # created before the first job; KILLED with it
        assert job.data.tags["mlflow.parentRunId"] == groups["lr=0.03"].info.run_id


def test_a_down_server_fails_fast_with_one_line(run_cli: Cli) -> None:
    uri = f"http://lrlab:secret@127.0.0.1:{free_port()}"
    done = run_cli("-m", "lr=0.01,0.03", f"tracking_uri={uri}", timeout=60)  # unbounded retries would hang
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "no MLflow server answered" in line and "mlflow server --host 127.0.0.1" in line
    assert "secret" not in done.stdout + done.stderr and "lrlab:***@127.0.0.1" in line
