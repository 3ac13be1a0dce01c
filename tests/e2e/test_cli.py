"""The real CLI in a subprocess against a real SQLite store under tmp_path."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lrlab.compare import compare

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]


def all_runs(client: MlflowClient) -> list[Run]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, max_results=1000)) if ids else []


def final(client: MlflowClient, run: Run, key: str) -> float:
    return max(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step).value


def test_canonical_sweep_gives_three_finished_children_of_one_parent(run_cli: Cli, client: MlflowClient) -> None:
    done = run_cli("-m", "lr=0.01,0.03,0.1")
    assert done.returncode == 0, done.stderr
    runs = all_runs(client)
    parents = [r for r in runs if r.data.tags.get("lrlab.sweep") == "true"]
    assert len(parents) == 1 and parents[0].info.run_name == "sweep lr=0.01,0.03,0.1"
    parent = parents[0]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == ["lr=0.01", "lr=0.03", "lr=0.1"]
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children.values())
    for run in children.values():
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
        assert steps == [1, 2, 3]
        # loss_curves.png is opt-in (plot_curves=true): the UI draws the curves from the metrics
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config.yaml", "params.json"}
    assert {"comparison.png", "summary.csv", "summary.html"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    # Faithful to the seed: lr=0.03 reaches the noise floor σ²/2 = 5e-5 in 3 epochs; lr=0.01 lags far behind.
    converged = children["lr=0.03"]
    assert 3e-5 < final(client, converged, "train_loss") < 8e-5
    assert final(client, converged, "w_error") < 0.01 and final(client, converged, "b_error") < 0.01
    assert final(client, children["lr=0.01"], "train_loss") > 100 * final(client, converged, "train_loss")
    assert "epoch 3, loss 0.000054" in done.stdout  # printed like the seed
    assert "lr=0.03" in done.stdout.split("status")[-1]  # the summary table
    # MLflow's own system tags and lrlab's provenance, on every run; the parent carries what its jobs share.
    for run in runs:
        tags = run.data.tags
        assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"] == "lrlab/run.py"
        assert tags["mlflow.user"] and len(tags["lrlab.code_digest"]) == 16 and tags["lrlab.env.mlflow"]
        assert tags["lrlab.host"] and int(tags["lrlab.pid"]) > 0 and float(tags["lrlab.heartbeat"]) > 0
        if tags["lrlab.git_commit"] != "unknown":
            assert tags["mlflow.source.git.commit"] == tags["lrlab.git_commit"]
        assert "data_seed" not in run.data.params and "None" not in run.data.params.values()  # nulls left out
    shared = parent.data.params
    assert shared["batch_size"] == "10" and shared["model"] == "scratch" and "lr" not in shared
    assert [i.dataset.name for i in parent.inputs.dataset_inputs] == ["synthetic"]
    # lrlab.compare: one row per job, only the params that vary (lr), sorted by a metric.
    table = compare(parent.info.run_id, client.tracking_uri, sort="train_loss")
    assert list(table.columns[:2]) == ["run", "lr"] and "batch_size" not in table.columns
    assert list(table["train_loss"]) == sorted(table["train_loss"]) and list(table["run"])[-1] == "lr=0.01"
    assert list(table["run_id"]) == [children[name].info.run_id for name in table["run"]]


def test_section_3_3_variant_reaches_sigma_squared(run_cli: Cli, client: MlflowClient) -> None:
    done = run_cli("model=linear", "loss=mse", "optimizer=sgd", "reader=dataloader")
    assert done.returncode == 0, done.stderr
    (run,) = all_runs(client)
    assert run.info.status == "FINISHED" and run.data.params["model"] == "linear"
    assert 5e-5 < final(client, run, "train_loss") < 2e-4  # σ² = 1e-4: nn.MSELoss has no ½
    assert "error in estimating w" in done.stdout
