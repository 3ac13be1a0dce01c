"""Each job's outcome (lrlab/core/outcome.py), from the real CLI: the tag lrlab.outcome, the summary's column and
the group counts.

The lrs were measured on the default data at batch_size=1000 (full-batch gradient descent, lr_critical_gd ≈ 1.86),
6 epochs, seeds 0-2, with both the default reader and reader=with_replacement:

- lr=0.3: still converging, mean excess_loss of the last 3 epochs ≈ 0.5 against a floor of ≈ 3e-8: above_floor;
- lr=1.0: at the OLS fit to float round-off (excess_loss ≈ 1e-10 to 8e-8, floor ≈ 1.5e-7): at_floor;
- lr=2.5: past the edge, excess_loss ×2.3 to ×2.6 per epoch from ≈ 40 to ≈ 4e3: growing;
- lr=40: train_loss past divergence_threshold (1e12) at epoch 4: overflow.

At the default batch_size=10 the span between lr_critical_ms ≈ 1.46 and overflow is heavy-tailed (lr=1.8 rises to
4e5 and comes back; lr=1.84 jumps by decades), so full batches give a growing run that is growing for every seed.
"""

from __future__ import annotations

import csv
import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.test_cli import all_runs

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]
EXPECTED = {"0.3": "above_floor", "1.0": "at_floor", "2.5": "growing", "40.0": "overflow"}
FULL_BATCH = ["batch_size=1000", "num_epochs=6"]


def summary_rows(client: MlflowClient, run_id: str, tmp_path: Path) -> list[dict[str, str]]:
    text = Path(client.download_artifacts(run_id, "summary.csv", str(tmp_path))).read_text()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("launcher", ["basic", pytest.param("vectorized", marks=pytest.mark.soak_only)])
def test_each_job_is_tagged_with_its_outcome(run_cli: Cli, client: MlflowClient, tmp_path: Path, launcher: str) -> None:
    done = run_cli("-m", f"lr={','.join(EXPECTED)}", *FULL_BATCH, f"launcher={launcher}")
    assert done.returncode == 0, done.stderr
    runs = all_runs(client)
    (parent,) = [r for r in runs if r.data.tags.get("lrlab.sweep") == "true"]
    jobs = {r.data.params["lr"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {lr: run.data.tags.get("lrlab.outcome") for lr, run in jobs.items()} == EXPECTED
    assert jobs["40.0"].info.status == "FAILED" and jobs["40.0"].data.tags["lrlab.diverged"] == "true"
    assert all(jobs[lr].info.status == "FINISHED" for lr in ("0.3", "1.0", "2.5"))  # growing still finished
    # The summary: a column of outcomes, in the file and on the terminal.
    rows = summary_rows(client, parent.info.run_id, tmp_path)
    assert {row["lr"]: row["outcome"] for row in rows} == EXPECTED
    table = done.stdout[done.stdout.rindex("run_id") - 400 :]
    assert "outcome" in table and "growing" in table and "above_floor" in table
    assert {"comparison.png", "lr_vs_loss.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_groups_count_their_seeds_by_outcome(run_cli: Cli, client: MlflowClient, tmp_path: Path) -> None:
    done = run_cli("-m", "lr=1.0,2.5,40", "seed=0,1", *FULL_BATCH)
    assert done.returncode == 0, done.stderr
    runs = all_runs(client)
    (parent,) = [r for r in runs if r.data.tags.get("lrlab.sweep") == "true"]
    groups = {str(r.info.run_name): r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(groups) == ["lr=1.0", "lr=2.5", "lr=40"]
    counts = {
        name: {o: int(g.data.metrics[f"n_{o}"]) for o in ("overflow", "growing", "above_floor", "at_floor", "bounded")}
        for name, g in groups.items()
    }
    zero = dict.fromkeys(("overflow", "growing", "above_floor", "at_floor", "bounded"), 0)
    assert counts == {
        "lr=1.0": zero | {"at_floor": 2},
        "lr=2.5": zero | {"growing": 2},
        "lr=40": zero | {"overflow": 2},
    }
    seeds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {g.info.run_id for g in groups.values()}]
    assert len(seeds) == 6 and all("lrlab.outcome" in r.data.tags for r in seeds)
    rows = summary_rows(client, parent.info.run_id, tmp_path)
    assert [(row["group"], row["outcomes"]) for row in rows] == [
        ("lr=1.0", "2 at_floor"),
        ("lr=2.5", "2 growing"),
        ("lr=40", "2 overflow"),
    ]
    assert "2 growing" in done.stdout.split("by group:\n")[1]
