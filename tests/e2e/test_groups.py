"""A group of seed replicates is a configuration apart from its seed: each seed run is in exactly one group."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.test_cli import all_runs

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_two_groups_that_compute_the_same_thing_keep_their_own_seeds(run_cli: Cli, client: MlflowClient) -> None:
    # device=auto resolves to the CPU here: both groups have one config hash, and used to share their seeds.
    done = run_cli("-m", "seed=0,1,2", "device=cpu,auto", "num_epochs=2")
    assert done.returncode == 0, done.stderr
    runs = all_runs(client)
    (parent,) = [r for r in runs if r.data.tags.get("lrlab.sweep") == "true"]
    groups = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(groups) == ["device=auto", "device=cpu"]
    for name, group in groups.items():
        seeds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == group.info.run_id]
        assert sorted(str(r.info.run_name) for r in seeds) == [f"seed={k} {name}" for k in range(3)]
        assert group.info.status == "FINISHED", name
        assert group.data.metrics["n_replicates"] == 3, name
    assert parent.info.status == "FINISHED"
