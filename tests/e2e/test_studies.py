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
# The lr study's grid, cut to three points that span it (both sides of the stability edge), and its 5 seeds cut
# to 2, to keep the test short.
LRS = ["0.01", "0.1", "3.0"]
GRID = "hydra.sweeper.params.lr='" + ",".join(LRS) + "'"
SEEDS = "hydra.sweeper.params.seed='0,1'"


def sweeps(client: MlflowClient) -> list[tuple[Run, list[Run], list[Run]]]:
    """Each sweep's parent with its group runs and its jobs (under the groups), oldest first."""
    runs = all_runs(client)
    parents = sorted((r for r in runs if "lrlab.sweep" in r.data.tags), key=lambda r: r.info.start_time)
    found = []
    for parent in parents:
        groups = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        ids = {g.info.run_id for g in groups}
        found.append((parent, groups, [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids]))
    return found


@pytest.mark.soak_only  # make soak: make test has resume in test_reruns
def test_lr_study_resumes_where_it_stopped_and_skips_what_finished(run_cli: Cli, client: MlflowClient) -> None:
    # A study that stopped after one of its lrs.
    partial = run_cli("experiment=lr_sweep", "hydra.sweeper.params.lr=0.01", SEEDS)
    assert partial.returncode == 0, partial.stderr

    whole = run_cli("experiment=lr_sweep", GRID, SEEDS)
    assert whole.returncode == 0, whole.stderr
    assert "skipped lr=0.01 seed=0:" in whole.stdout and "skipped lr=0.01 seed=1:" in whole.stdout
    (_, _, first), (parent, groups, second) = sweeps(client)
    assert sorted(r.info.run_name for r in first) == ["seed=0", "seed=1"]  # lr=0.01 alone: only seed varied
    ran = sorted(f"lr={lr} seed={s}" for lr in LRS if lr != "0.01" for s in (0, 1))
    assert sorted(str(r.info.run_name) for r in second) == ran
    assert {"lr_vs_loss.png", "comparison.png", "summary.csv"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    # Every lr is a group of 2 seeds; a skipped seed's earlier FINISHED run counts in its group.
    by_name = {str(g.info.run_name): g for g in groups}
    assert sorted(by_name) == sorted(f"lr={lr}" for lr in LRS)
    reused = by_name["lr=0.01"]
    assert reused.data.metrics["n_replicates"] == 2
    assert set(reused.data.tags["lrlab.replicate_runs"].split()) == {r.info.run_id for r in first}

    # Past the stability edge the study diverges, on purpose, for every seed; those jobs end FAILED (diverged).
    diverged = sorted(str(r.info.run_name) for r in second if r.data.tags.get("lrlab.diverged") == "true")
    assert diverged == ["lr=3.0 seed=0", "lr=3.0 seed=1"]
    assert by_name["lr=3.0"].data.metrics["n_diverged"] == 2 and by_name["lr=0.1"].data.metrics["n_diverged"] == 0
    assert "divergence begins at lr=3 (lr_critical_gd = " in whole.stdout
    assert "seeds diverged per lr: lr=0.01: 0/2, lr=0.1: 0/2, lr=3: 2/2" in whole.stdout
    assert parent.data.metrics["largest_stable_lr"] == 0.1 and parent.data.metrics["divergence_onset_lr"] == 3.0

    again = run_cli("experiment=lr_sweep", GRID, SEEDS)
    assert again.returncode == 0, again.stderr
    *_, (_, _, third) = sweeps(client)
    # Every FINISHED job is skipped; only the diverged ones (never FINISHED) run again.
    assert sorted(str(r.info.run_name) for r in third) == diverged
    assert again.stdout.count("skipped lr=") == 2 * len(LRS) - len(diverged)


def test_reproduce_confirms_a_sweep_and_a_run_bit_for_bit(
    run_cli: Cli, client: MlflowClient, run_reproduce: Callable[[str], subprocess.CompletedProcess[str]]
) -> None:
    done = run_cli("-m", "lr=0.02,0.05", "model=linear", "optimizer=momentum", "reader=shuffled_index")
    assert done.returncode == 0, done.stderr
    parent_id = done.stdout.split("sweep: parent run ")[1].split()[0]
    originals = [r for r in all_runs(client) if r.data.tags.get("mlflow.parentRunId") == parent_id]
    # Given the sweep's parent (the id a sweep prints), every job is run again and compared.
    check = run_reproduce(parent_id)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{parent_id} is a sweep: reproducing its 2 job(s)" in check.stdout
    assert "2 of 2 job(s) reproduced" in check.stdout
    assert check.stdout.count("reproduced bit for bit (same device): every metric history matches") == 2
    copies = {r.data.tags["lrlab.reproduces"]: r for r in all_runs(client) if "lrlab.reproduces" in r.data.tags}
    assert sorted(copies) == sorted(r.info.run_id for r in originals)
    for original in originals:
        copy = copies[original.info.run_id]
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
