"""The pipeline into a real SQLite MLflow store: params, metric histories with their steps, status."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import DictConfig

import lrlab
from lrlab.record.keys import MAX_PARAM_VALUE
from lrlab.record.orphans import end_orphans
from lrlab.sweep.compose import CONF_DIR, job_config
from lrlab.sweep.job import JobResult, run_job
from tests.conftest import option_name


@pytest.fixture
def run_in_process(compose_cfg: Callable[..., DictConfig], tracking_uri: str) -> Callable[..., str]:
    """Run one job in this process, as Hydra would, and return its MLflow run id."""

    def run(*overrides: str) -> str:
        cfg = compose_cfg(*overrides, f"tracking_uri={tracking_uri}", return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        result = run_job(job_config(cfg))
        assert result.run_id is not None and result.status == "FINISHED"
        return result.run_id

    return run


def test_params_metrics_artifacts_and_status(run_in_process: Callable[..., str], client: MlflowClient) -> None:
    run_id = run_in_process("num_epochs=4", "plot_curves=true")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["lr"] == "0.03" and params["batch_size"] == "10" and params["num_epochs"] == "4"
    assert params["seed"] == "0"
    assert params["dataset.num_examples"] == "1000" and params["dataset.true_w"] == "[2.0, -3.4]"
    assert params["model.name"] == "scratch" and params["optimizer.name"] == "sgd_scratch"
    for group, option in [
        ("dataset", "synthetic"),
        ("model", "scratch"),
        ("loss", "squared"),
        ("optimizer", "sgd_scratch"),
        ("reader", "permutation"),
        ("device", "cpu"),
        ("engine", "autograd"),
    ]:
        assert params[group] == option
    for key in ("train_loss", "w_error", "b_error", "excess_loss"):
        history = client.get_metric_history(run_id, key)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3, 4]
    assert client.get_metric_history(run_id, "samples_per_second")[0].value > 0
    assert client.get_metric_history(run_id, "train_seconds")[0].value > 0
    losses = [m.value for m in sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)]
    assert losses[0] > losses[-1]
    reference = {
        m.key: m
        for key in ("ols_train_loss", "lr_critical_gd", "lr_ratio")
        for m in client.get_metric_history(run_id, key)
    }
    assert 3e-5 < reference["ols_train_loss"].value < 8e-5  # σ²/2 with σ = 0.01
    assert 1.5 < reference["lr_critical_gd"].value < 2.5  # 2/λ_max(XᵀX/n) ≈ 2 for the squared loss
    assert reference["lr_ratio"].value == pytest.approx(0.03 / reference["lr_critical_gd"].value)
    excess = max(client.get_metric_history(run_id, "excess_loss"), key=lambda m: m.step).value
    assert excess == pytest.approx(losses[-1] - reference["ols_train_loss"].value, abs=1e-12)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "params.json", "loss_curves.png"} <= artifacts
    final = json.loads(Path(client.download_artifacts(run_id, "params.json")).read_text())
    assert len(final["w"]) == 2 and abs(final["b"] - 4.2) < 0.01
    tags = run.data.tags
    assert len(tags["lrlab.config_hash"]) == 16 and tags["lrlab.env.torch"].startswith("2.13")
    assert run.inputs.dataset_inputs[0].dataset.name == "synthetic"


def test_same_config_same_hash_other_config_other_hash(
    run_in_process: Callable[..., str], client: MlflowClient
) -> None:
    first, again, other = run_in_process("lr=0.05"), run_in_process("lr=0.05"), run_in_process("lr=0.06")
    tag = lambda run_id: client.get_run(run_id).data.tags["lrlab.config_hash"]  # noqa: E731
    assert tag(first) == tag(again) != tag(other)
    histories = [[m.value for m in client.get_metric_history(r, "train_loss")] for r in (first, again)]
    assert histories[0] == histories[1]  # bit for bit


def test_two_spellings_of_one_computation_share_a_hash_and_numbers(
    run_in_process: Callable[..., str], client: MlflowClient
) -> None:
    momentum, spelled = run_in_process("optimizer=momentum"), run_in_process("optimizer=sgd", "optimizer.momentum=0.9")
    tags = [client.get_run(r).data.tags["lrlab.config_hash"] for r in (momentum, spelled)]
    assert tags[0] == tags[1]
    histories = [[m.value for m in client.get_metric_history(r, "train_loss")] for r in (momentum, spelled)]
    assert histories[0] == histories[1]


def test_one_example_finishes_with_a_min_norm_reference(
    run_in_process: Callable[..., str], client: MlflowClient
) -> None:
    run = client.get_run(run_in_process("dataset.num_examples=1", "batch_size=1"))
    assert run.info.status == "FINISHED"
    assert run.data.tags["lrlab.ols"].startswith("min-norm least squares: rank(AᵀA) = 1 < d+1 = 3")
    assert run.data.metrics["ols_train_loss"] < 1e-20  # one point is fitted exactly


def test_a_run_of_other_code_is_not_reused_silently(
    compose_cfg: Callable[..., DictConfig], tracking_uri: str, client: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*overrides: str) -> JobResult:
        cfg = compose_cfg("rerun=false", *overrides, f"tracking_uri={tracking_uri}", return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return run_job(job_config(cfg))

    first = run()
    assert first.status == "FINISHED" and run().status == "SKIPPED"
    assert f"this config already FINISHED as run {first.run_id}" in capsys.readouterr().out
    client.set_tag(str(first.run_id), "lrlab.code_digest", "0000000000000000")  # as if older lrlab made it
    again = run()
    assert again.status == "FINISHED" and again.run_id != first.run_id
    assert f"not reusing run {first.run_id} for defaults: it was made by other lrlab code" in capsys.readouterr().out


def test_orphans_of_another_host_end_after_their_heartbeat_stops(client: MlflowClient, tracking_uri: str) -> None:
    experiment = client.create_experiment("orphans")
    now = time.time()
    tags = {"lrlab.host": "elsewhere", "lrlab.pid": "1", "lrlab.pid_started": "0"}
    stale = client.create_run(experiment, tags={**tags, "lrlab.heartbeat": f"{now - 1000:.0f}"}).info.run_id
    fresh = client.create_run(experiment, tags={**tags, "lrlab.heartbeat": f"{now - 10:.0f}"}).info.run_id
    foreign = client.create_run(experiment).info.run_id  # not lrlab's: no tags, left alone
    here = {"lrlab.host": socket.gethostname(), "lrlab.pid": str(os.getpid())}
    alive = client.create_run(experiment, tags={**here, "lrlab.pid_started": f"{psutil.Process().create_time():.2f}"})
    reused = client.create_run(experiment, tags={**here, "lrlab.pid_started": "12345.00"})  # same pid, other process
    ended = end_orphans(client, experiment, orphan_timeout=900)
    assert {r.info.run_id for r in ended} == {stale, reused.info.run_id}
    status = {r: client.get_run(r).info.status for r in (stale, fresh, foreign, alive.info.run_id, reused.info.run_id)}
    assert status == {
        stale: "KILLED",
        fresh: "RUNNING",
        foreign: "RUNNING",
        alive.info.run_id: "RUNNING",
        reused.info.run_id: "KILLED",
    }
    assert client.get_run(stale).data.tags["lrlab.orphaned"].startswith("no heartbeat from elsewhere (pid 1) for 10")


def test_the_jobs_still_running_at_a_sweeps_end_are_found_under_the_parent_and_its_groups(
    client: MlflowClient,
) -> None:
    from lrlab.record.tracking import GROUP_TAG, running_jobs

    experiment = client.create_experiment("running")
    parent = client.create_run(experiment).info.run_id

    def child(of: str, status: str, **tags: str) -> str:
        run = client.create_run(experiment, tags={"mlflow.parentRunId": of, **tags}).info.run_id
        if status != "RUNNING":
            client.set_terminated(run, status=status)
        return run

    marked = {GROUP_TAG: "true"}
    group, ended_group = child(parent, "RUNNING", **marked), child(parent, "FINISHED", **marked)
    running = {child(parent, "RUNNING"), child(group, "RUNNING"), child(ended_group, "RUNNING")}
    for of, status in ((parent, "FINISHED"), (group, "KILLED"), (ended_group, "FAILED")):
        child(of, status)
    child(child(parent, "FINISHED"), "RUNNING")  # a job's own child is not a job of the sweep
    assert {r.info.run_id for r in running_jobs(client, experiment, parent)} == running


def test_a_compiled_run_is_recorded_as_an_autograd_run_is(
    run_in_process: Callable[..., str], client: MlflowClient
) -> None:
    runs = {
        engine: client.get_run(run_in_process(f"engine={engine}", "num_epochs=2"))
        for engine in ("autograd", "compiled")
    }
    assert runs["compiled"].data.params["engine"] == runs["compiled"].data.params["engine.name"] == "compiled"
    assert runs["autograd"].data.tags["lrlab.config_hash"] != runs["compiled"].data.tags["lrlab.config_hash"]
    assert runs["compiled"].data.tags["lrlab.env.numba"]
    for key in ("train_loss", "w_error", "b_error", "excess_loss"):  # the seed's config: equal bit for bit
        histories = [[(m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)] for r in runs.values()]
        assert sorted(histories[0]) == sorted(histories[1]) and len(histories[0]) == 2
    assert client.get_metric_history(runs["compiled"].info.run_id, "samples_per_second")[0].value > 0


STUDIES = sorted(p.stem for p in (CONF_DIR.parent / "experiments").glob("*.yaml"))
# For each group, an option that no study picks, so that the command line has something to win against.
OTHER = {"dataset": "wide", "model": "linear", "loss": "mse", "optimizer": "adam", "reader": "dataloader"}


@pytest.mark.parametrize("study", STUDIES)
def test_a_command_line_choice_beats_the_study_in_the_record(
    run_in_process: Callable[..., str], client: MlflowClient, study: str
) -> None:
    # Every group chosen on the command line at once; the wide set kept small.
    choices = [f"{group}={option}" for group, option in OTHER.items()]
    one_job = [
        f"experiment={study}",
        *choices,
        "num_epochs=1",
        "theory_epochs=0",
        "dataset.num_examples=200",
        "hydra.mode=RUN",
    ]
    run = client.get_run(run_in_process(*one_job))
    logged = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text())
    for group, option in OTHER.items():
        name = option_name(group, option)
        assert run.data.params[group] == option and run.data.params[f"{group}.name"] == name
        assert logged[group]["name"] == name
    # The computation: under mse the least-squares floor is σ²·(n−d−1)/n ≈ 9e-5, not half of it (squared),
    # and the wide set has 20 weights.
    assert 6.5e-5 < run.data.metrics["ols_train_loss"] < 1.3e-4
    assert len(json.loads(Path(client.download_artifacts(run.info.run_id, "params.json")).read_text())["w"]) == 20


def test_a_param_longer_than_mlflows_limit_goes_whole_into_an_artifact(client: MlflowClient, tracking_uri: str) -> None:
    true_w = [round(math.sin(i) * 3, 12) for i in range(450)]
    overrides = (f"dataset.true_w=[{','.join(map(repr, true_w))}]", "num_epochs=1")
    run_id = lrlab.track(lrlab.compose(*overrides), tracking_uri=tracking_uri).run_id
    assert run_id is not None
    param = client.get_run(run_id).data.params["dataset.true_w"]
    assert param.endswith(" params/dataset.true_w.txt"), f"{len(param)} characters: {param[-40:]}"
    text = Path(client.download_artifacts(run_id, "params/dataset.true_w.txt")).read_text()
    assert MAX_PARAM_VALUE == MAX_PARAM_VAL_LENGTH < len(text)  # MLflow would have cut it
    assert json.loads(text) == true_w
    assert param == f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]} params/dataset.true_w.txt"
