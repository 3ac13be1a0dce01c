"""Studies: resumable (finished jobs skipped) and reproducible from what a run logged."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.e2e.test_cli import all_runs

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]
# The lr study's grid, cut to five points that span it (both sides of the stability edge) to keep the test short.
LRS = ["0.003", "0.01", "0.03", "0.1", "3.0"]
GRID = "hydra.sweeper.params.lr='" + ",".join(LRS) + "'"


def sweeps(client: MlflowClient) -> list[tuple[Run, list[Run]]]:
    """Each sweep's parent with its children, oldest first."""
    runs = all_runs(client)
    parents = sorted((r for r in runs if "lrlab.sweep" in r.data.tags), key=lambda r: r.info.start_time)
    return [(p, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]) for p in parents]


def test_lr_study_resumes_where_it_stopped_and_skips_what_finished(run_cli: Cli, client: MlflowClient) -> None:
    # A study that stopped after two of its jobs.
    partial = run_cli("experiment=lr_sweep", "hydra.sweeper.params.lr='0.01,0.03'")
    assert partial.returncode == 0, partial.stderr

    whole = run_cli("experiment=lr_sweep", GRID)
    assert whole.returncode == 0, whole.stderr
    assert "skipped lr=0.01:" in whole.stdout and "skipped lr=0.03:" in whole.stdout
    (_, first), (parent, second) = sweeps(client)
    assert sorted(r.info.run_name for r in first) == ["lr=0.01", "lr=0.03"]
    assert sorted(str(r.info.run_name) for r in second) == sorted(
        f"lr={lr}" for lr in LRS if lr not in ("0.01", "0.03")
    )
    assert {"lr_vs_loss.png", "comparison.png", "summary.csv"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    summary = whole.stdout.split("status")[-1]
    assert summary.count("SKIPPED") == 2 and summary.count("lr=") == len(LRS)

    # Past the stability edge the study diverges, on purpose; those jobs end FAILED (diverged).
    diverged = sorted(str(r.info.run_name) for r in second if r.data.tags.get("lrlab.diverged") == "true")
    assert "lr=3.0" in diverged and "lr=0.1" not in diverged
    lr_critical = next(r for r in second if r.info.run_name == "lr=0.1").data.metrics["lr_critical"]
    assert all(float(name.split("=")[1]) > lr_critical / 2 for name in diverged)

    again = run_cli("experiment=lr_sweep", GRID)
    assert again.returncode == 0, again.stderr
    *_, (_, third) = sweeps(client)
    # Every FINISHED job is skipped; only the diverged ones (never FINISHED) run again.
    assert sorted(str(r.info.run_name) for r in third) == diverged
    assert again.stdout.count("skipped lr=") == len(LRS) - len(diverged)


def test_reproduce_confirms_a_logged_run_bit_for_bit(
    run_cli: Cli, client: MlflowClient, run_reproduce: Callable[[str], subprocess.CompletedProcess[str]]
) -> None:
    done = run_cli("lr=0.05", "model=linear", "optimizer=momentum", "reader=shuffled_index")
    assert done.returncode == 0, done.stderr
    (original,) = all_runs(client)
    check = run_reproduce(original.info.run_id)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "reproduced bit for bit (same device): every metric history matches" in check.stdout
    copy = next(r for r in all_runs(client) if r.data.tags.get("lrlab.reproduces") == original.info.run_id)
    assert copy.data.tags["lrlab.config_hash"] == original.data.tags["lrlab.config_hash"]
    assert {k: v for k, v in copy.data.params.items() if k != "tracking_uri"} == {
        k: v for k, v in original.data.params.items() if k != "tracking_uri"
    }
    for key in ("train_loss", "w_error", "b_error", "excess_loss"):
        first = [(m.step, m.value) for m in client.get_metric_history(original.info.run_id, key)]
        second = [(m.step, m.value) for m in client.get_metric_history(copy.info.run_id, key)]
        assert sorted(first) == sorted(second) and len(first) == 3

    missing = run_reproduce("0123456789abcdef")
    assert missing.returncode == 2 and missing.stderr.strip().startswith("lrlab: error: run_id=")
