"""``dataset=csv`` through the real CLI in a subprocess, against a real SQLite store under tmp_path: a run on the
shipped table records the file as its input, by its digest, and says what its errors are measured against; bad
data is one line naming the key, exit code 2, and no run at all."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

Cli = Callable[..., subprocess.CompletedProcess[str]]
HOUSES = REPO / "examples" / "data" / "houses.csv"


def all_runs(client: MlflowClient) -> list[Run]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, max_results=1000)) if ids else []


def final(client: MlflowClient, run: Run, key: str) -> float:
    return max(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step).value


def test_a_run_on_the_shipped_table_records_the_file_and_its_fit(
    run_cli: Cli, client: MlflowClient, tmp_path: Path
) -> None:
    # The default path, relative, read from the folder lrlab starts in, although the job runs in another.
    (tmp_path / "examples" / "data").mkdir(parents=True)
    shutil.copy(HOUSES, tmp_path / "examples" / "data" / "houses.csv")
    done = run_cli("dataset=csv", "lr=0.1", "num_epochs=30", "hydra.job.chdir=true")
    assert done.returncode == 0, done.stderr
    (run,) = all_runs(client)
    assert run.info.status == "FINISHED"
    assert run.data.tags["lrlab.errors_against"] == "least_squares_fit"
    params = run.data.params
    assert params["dataset"] == "csv" and params["dataset.path"] == "examples/data/houses.csv"
    assert params["dataset.target"] == "price" and "dataset.true_w" not in params and "dataset.features" not in params
    (linked,) = run.inputs.dataset_inputs
    dataset, tags = linked.dataset, {tag.key: tag.value for tag in linked.tags}
    sha256 = hashlib.sha256(HOUSES.read_bytes()).hexdigest()
    assert (dataset.name, dataset.digest, dataset.source_type) == ("csv", sha256[:16], "local")
    assert json.loads(dataset.source) == {"uri": str(tmp_path / "examples" / "data" / "houses.csv")}
    assert json.loads(dataset.profile) == {"num_rows": 300, "num_columns": 6, "sha256": sha256}
    schema = {c["name"]: c["type"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
    assert schema == {"district": "string", **dict.fromkeys(("area", "garden", "age", "distance", "price"), "double")}
    assert tags["lrlab.target"] == "price" and tags["lrlab.features"] == "area,garden,age,distance"
    assert tags["mlflow.data.context"] == "training"
    # Errors against the least-squares fit: the fit's own are 0, the run's small after 30 epochs at lr=0.1.
    assert final(client, run, "ols_w_error") == 0.0 and final(client, run, "ols_b_error") == 0.0
    assert final(client, run, "w_error") < 0.02 and final(client, run, "b_error") < 0.02
    assert "(‖w − w_ols‖₂)" in done.stdout
    with tempfile.TemporaryDirectory() as folder:
        fit = json.loads(Path(client.download_artifacts(run.info.run_id, "params.json", folder)).read_text())
    assert fit["features"] == ["area", "garden", "age", "distance"] and fit["target"] == "price"
    assert len(fit["least_squares_w"]) == 4 and fit["least_squares_w"][0] == pytest.approx(2.196, abs=1e-3)
    assert "true_w" not in fit and len(fit["w"]) == 4


def test_a_vectorized_sweep_of_the_compiled_engine_trains_a_table(run_cli: Cli, client: MlflowClient) -> None:
    done = run_cli(
        "-m", "dataset=csv", f"dataset.path={HOUSES}", "lr=0.05,0.1", "engine=compiled", "launcher=vectorized"
    )
    assert done.returncode == 0, done.stderr
    runs = all_runs(client)
    (parent,) = [r for r in runs if r.data.tags.get("lrlab.sweep") == "true"]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(jobs) == 2 and all(r.info.status == "FINISHED" for r in [parent, *jobs])
    assert all(r.data.tags["lrlab.launcher"] == "vectorized" for r in jobs)
    digest = hashlib.sha256(HOUSES.read_bytes()).hexdigest()[:16]
    assert [i.dataset.digest for i in parent.inputs.dataset_inputs] == [digest]  # one file, logged once


BAD = [  # (the table's text, or None for no file; the overrides; the key the one line names)
    (None, (), "dataset.path"),  # no such file
    ("a,b,y\n1,2,3\n2,1,4\n", ("dataset.target=price",), "dataset.target"),
    ("a,b,y\n1,2,3\n2,1,4\n", ("dataset.target=y", "dataset.features=[a,zz]"), "dataset.features"),
    ("a,b,y\n1,2,3\n2,1,oops\n", ("dataset.target=y",), "dataset.target"),
    ("a,b,y\n1,2,3\n2,x,4\n", ("dataset.target=y", "dataset.features=[a,b]"), "dataset.features"),
    ("a,b,y\n", ("dataset.target=y",), "dataset.path"),  # no rows
    ("name,y\nx,3\nz,4\n", ("dataset.target=y",), "dataset.features"),  # no numeric feature column
    ("a,y\n1,2\n2,3\n", ("dataset.target=y", "dataset.true_w=[1.0]"), "dataset.true_w"),  # a synthetic key
]


CASES = [(*bad, ()) for bad in BAD] + [(*bad, ("-m", "lr=0.01,0.1")) for bad in BAD[:2]]  # a sweep's too


@pytest.mark.parametrize(
    ("text", "overrides", "key", "swept"),
    CASES,
    ids=[f"{c[2]}-{i}{'-sweep' if c[3] else ''}" for i, c in enumerate(CASES)],
)
def test_bad_data_is_one_line_naming_the_key_and_leaves_no_run(
    run_cli: Cli,
    client: MlflowClient,
    tmp_path: Path,
    text: str | None,
    overrides: tuple[str, ...],
    key: str,
    swept: tuple[str, ...],
) -> None:
    if text is not None:
        (tmp_path / "t.csv").write_text(text)
    # A sweep refuses before its parent run exists: every job is validated, its table read, first.
    done = run_cli(*swept, "dataset=csv", "dataset.path=t.csv", "batch_size=1", *overrides)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lrlab: error: {key}="), done.stderr
    assert "Traceback" not in done.stderr
    assert all_runs(client) == []
