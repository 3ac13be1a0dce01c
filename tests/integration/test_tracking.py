"""The pipeline into a real SQLite MLflow store: params, metric histories with their steps, status."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from lrlab.config import job_config
from lrlab.run import run_job


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
    run_id = run_in_process("num_epochs=4")
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
        for key in ("ols_train_loss", "lr_critical", "lr_ratio")
        for m in client.get_metric_history(run_id, key)
    }
    assert 3e-5 < reference["ols_train_loss"].value < 8e-5  # σ²/2 with σ = 0.01
    assert 1.5 < reference["lr_critical"].value < 2.5  # 2/λ_max(XᵀX/n) ≈ 2 for the squared loss
    assert reference["lr_ratio"].value == pytest.approx(0.03 / reference["lr_critical"].value)
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
