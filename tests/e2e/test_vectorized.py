"""launcher=vectorized: the same sweep through the basic launcher and the vectorized one gives the
same record, run for run; what it cannot train as the basic launcher would is refused before any run exists.

Tolerance: every metric history of every run (jobs, group runs, parent) agrees within RELATIVE = 1e-6 of the
basic launcher's, the bound it was built to. On the CPU the vectorized launcher repeats torch's arithmetic operation
by operation (lrlab/core/batched.py), so what was seen is equality (a difference of 0).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.e2e.test_cli import all_runs

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]
RELATIVE = 1e-6
TIMINGS = ("train_seconds", "samples_per_second")  # wall time: a property of the launch, not of the numbers
# lr=3 diverges in epoch 1; 1003 examples leave a last minibatch of 3; seed=0,1 nests the jobs under group runs;
# a schedule and an averaged model, whose metrics are recorded beside the last iterate's.
SWEEP = ("-m", "lr=0.03,3", "seed=0,1", "dataset.num_examples=1003", "schedule=cosine", "averaging=tail")


def by_name(client: MlflowClient) -> dict[str, Run]:
    runs = all_runs(client)
    named = {str(r.info.run_name): r for r in runs}
    assert len(named) == len(runs)  # names are unique in one sweep: jobs, groups, parent
    return named


def histories(client: MlflowClient, run: Run) -> dict[str, list[tuple[int, float]]]:
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
        if key not in TIMINGS
    }


def relative(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def test_vectorized_sweep_records_what_the_basic_launcher_records(
    run_cli: Cli, client: MlflowClient, store_template: Path, tmp_path: Path
) -> None:
    basic_uri = f"sqlite:///{tmp_path / 'basic.db'}"
    shutil.copy(store_template, tmp_path / "basic.db")
    done = run_cli(*SWEEP, "launcher=basic", env={"MLFLOW_TRACKING_URI": basic_uri})
    assert done.returncode == 0, done.stderr
    (tmp_path / "multirun").rename(tmp_path / "multirun_basic")
    done = run_cli(*SWEEP, "launcher=vectorized")
    assert done.returncode == 0, done.stderr
    assert "Launching 4 jobs in 2 batched group(s)" in done.stdout + done.stderr  # one group per seed

    basic, vectorized = by_name(MlflowClient(basic_uri)), by_name(client)
    assert sorted(basic) == sorted(vectorized)
    jobs = [name for name, run in basic.items() if "lrlab.job_num" in run.data.tags]
    assert sorted(jobs) == ["lr=0.03 seed=0", "lr=0.03 seed=1", "lr=3 seed=0", "lr=3 seed=1"]
    worst = 0.0
    for name, b in basic.items():
        v = vectorized[name]
        assert v.info.status == b.info.status, name
        assert {k: p for k, p in v.data.params.items() if k != "launcher"} == {
            k: p for k, p in b.data.params.items() if k != "launcher"
        }, name
        expected, got = histories(MlflowClient(basic_uri), b), histories(client, v)
        assert sorted(got) == sorted(expected), name
        if name == "lr=0.03 seed=0":  # averaged from the middle of its 3 epochs: epochs 2 and 3
            assert [s for s, _ in got["avg_train_loss"]] == [2, 3] and math.isfinite(got["avg_w_error"][-1][1])
        for key, steps in expected.items():
            assert [s for s, _ in got[key]] == [s for s, _ in steps], (name, key)
            for (_, x), (_, y) in zip(steps, got[key], strict=True):
                worst = max(worst, relative(x, y))
    assert worst <= RELATIVE
    print(f"largest relative difference of a metric: {worst:g}")

    for name in jobs:
        b, v = basic[name], vectorized[name]
        assert v.data.tags["lrlab.launcher"] == "vectorized" and v.data.tags["lrlab.vectorized_group"] == "2"
        for tag in ("lrlab.config_hash", "lrlab.diverged", "lrlab.diverged_epoch", "mlflow.parentRunId"):
            parent = tag == "mlflow.parentRunId"  # the same group run, by name
            want = basic_names(basic)[b.data.tags[tag]] if parent else b.data.tags.get(tag)
            have = basic_names(vectorized)[v.data.tags[tag]] if parent else v.data.tags.get(tag)
            assert have == want, (name, tag)
        artifacts = {a.path for a in client.list_artifacts(v.info.run_id)}
        assert artifacts == {a.path for a in MlflowClient(basic_uri).list_artifacts(b.info.run_id)}, name
        for artifact in sorted(artifacts & {"config.yaml", "params.json"}):
            text = Path(client.download_artifacts(v.info.run_id, artifact, str(tmp_path / "v" / name)))
            want_text = Path(MlflowClient(basic_uri).download_artifacts(b.info.run_id, artifact, str(tmp_path / name)))
            assert text.read_text() == want_text.read_text(), (name, artifact)

    # Each job's Hydra files, derived from its group's one compose, are what composing the job gives.
    for job_dir in sorted((tmp_path / "multirun_basic").glob("[0-9]*")):
        mine = tmp_path / "multirun" / job_dir.name / ".hydra"
        assert (mine / "config.yaml").read_text() == (job_dir / ".hydra" / "config.yaml").read_text()
        for file, node in (("overrides.yaml", None), ("hydra.yaml", "job")):
            want, have = (
                yaml.safe_load(p.read_text().replace("=basic", "=vectorized"))
                for p in (job_dir / ".hydra" / file, mine / file)
            )
            if node:
                want, have = want["hydra"][node], have["hydra"][node]
            assert have == want, (job_dir.name, file)


def basic_names(runs: dict[str, Run]) -> dict[str, str]:
    return {r.info.run_id: name for name, r in runs.items()}


def test_what_the_vectorized_launcher_cannot_train_is_refused_before_any_run(
    run_cli: Cli, client: MlflowClient
) -> None:
    done = run_cli("-m", "lr=0.01,0.1", "optimizer=adam", "launcher=vectorized")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("lrlab: error: optimizer=adam: launcher=vectorized trains engine=autograd jobs")
    assert all_runs(client) == []
