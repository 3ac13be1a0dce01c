"""Seeds as replicates: group runs, their statistics, the summary by group, and lrlab.compare."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lrlab.compare import compare
from lrlab.compare import main as compare_main
from lrlab.run import expand_replicates
from tests.e2e.test_cli import all_runs

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]
METRICS = ("train_loss", "w_error", "b_error", "excess_loss")


def history(client: MlflowClient, run: Run, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


def test_replicates_is_a_sweep_over_seeds() -> None:
    assert expand_replicates(["lr=0.1", "replicates=5"]) == ["-m", "lr=0.1", "seed=range(0,5)"]
    assert expand_replicates(["-m", "replicates=2"]) == ["-m", "seed=range(0,2)"]
    assert expand_replicates(["lr=0.1"]) == ["lr=0.1"]


def test_a_sweep_over_seeds_nests_seed_runs_under_group_runs_that_aggregate_them(
    run_cli: Cli, client: MlflowClient, tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # lr=2.1 on 100 examples diverges for seed 0 only (past lr_critical_gd = 1.38): a group that partly diverged.
    done = run_cli("-m", "seed=0,1,2", "lr=0.03,2.1", "dataset.num_examples=100")
    assert done.returncode == 0, done.stderr
    runs = all_runs(client)
    (parent,) = [r for r in runs if r.data.tags.get("lrlab.sweep") == "true"]
    assert parent.info.status == "FINISHED"
    under = {p: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p] for p in {r.info.run_id for r in runs}}
    groups = {str(r.info.run_name): r for r in under[parent.info.run_id]}
    assert sorted(groups) == ["lr=0.03", "lr=2.1"]
    assert all(g.data.tags["lrlab.group"] == "true" and g.info.status == "FINISHED" for g in groups.values())
    assert groups["lr=0.03"].data.params["lr"] == "0.03" and "seed" not in groups["lr=0.03"].data.params
    for name, group in groups.items():
        seeds = under[group.info.run_id]
        assert sorted(str(r.info.run_name) for r in seeds) == [f"seed={k} {name}" for k in range(3)]
        finished = [r for r in seeds if r.info.status == "FINISHED"]
        diverged = [r for r in seeds if r.data.tags.get("lrlab.diverged") == "true"]
        assert len(finished) + len(diverged) == 3
        for key in METRICS:  # the group's history is the mean (and std) of its finished seeds' histories
            per_seed = np.array([[h[s] for s in sorted(h)] for h in (history(client, r, key) for r in finished)])
            mean, std = history(client, group, f"{key}_mean"), history(client, group, f"{key}_std")
            assert sorted(mean) == [1, 2, 3]
            assert [mean[s] for s in sorted(mean)] == pytest.approx(per_seed.mean(axis=0).tolist(), rel=1e-12)
            assert [std[s] for s in sorted(std)] == pytest.approx(per_seed.std(axis=0, ddof=1).tolist(), rel=1e-12)
        metrics = group.data.metrics
        assert metrics["n_replicates"] == len(finished) and metrics["n_diverged"] == len(diverged)
        assert metrics["train_loss_ci95_low"] < metrics["train_loss_mean"] < metrics["train_loss_ci95_high"]
        assert group.data.tags["lrlab.diverged_replicates"] == str(len(diverged))
    assert groups["lr=0.03"].data.metrics["n_diverged"] == 0 and groups["lr=2.1"].data.metrics["n_diverged"] == 1
    assert "lr=2.1: 1 of 3 seed(s) diverged; aggregating the rest" in done.stdout
    assert "divergence begins at lr=2.1" in done.stdout

    # The summary: one row per group, the same numbers as the group runs; the overlay draws bands.
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.html", "comparison.png", "lr_vs_loss.png"} <= artifacts
    rows = list(
        csv.DictReader(
            io.StringIO(Path(client.download_artifacts(parent.info.run_id, "summary.csv", str(tmp_path))).read_text())
        )
    )
    assert [(r["group"], r["n"], r["diverged"]) for r in rows] == [("lr=0.03", "3", "0"), ("lr=2.1", "2", "1")]
    for row in rows:
        assert float(row["w_error_mean"]) == pytest.approx(groups[row["group"]].data.metrics["w_error_mean"])
    table = done.stdout.split("by group:\n")[1]
    assert table.splitlines()[0].split()[:4] == ["group", "lr", "n", "diverged"]
    assert "FINISHED, 1 diverged" in table

    # lrlab.compare reads the same sweep back from the store: by default the experiment's latest sweep.
    shown = subprocess.run(
        [sys.executable, "-m", "lrlab.compare", "--sort", "w_error_mean"],
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": tracking_uri, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    header, *lines = shown.stdout.strip().splitlines()
    assert header.split()[:4] == ["group", "lr", "n", "diverged"] and "batch_size" not in header  # only what varies
    assert [line.split()[0] for line in lines] == ["lr=0.03", "lr=2.1"]  # smallest w_error_mean first
    every = compare(parent.info.run_id, tracking_uri, every_param=True)
    assert {"batch_size", "lr", "num_epochs"} <= set(every.columns) and len(every) == 2
    assert compare_main([parent.info.run_id, "--tracking-uri", tracking_uri, "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("group,lr,n,diverged,train_loss_mean")
    assert compare_main(["--tracking-uri", tracking_uri, "--sort", "nosuch"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lrlab: error: --sort nosuch: not a column")
