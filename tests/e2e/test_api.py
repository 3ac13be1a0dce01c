"""The Python API in a fresh process gives the CLI's record; a wheel runs from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.e2e.test_cli import all_runs

pytestmark = pytest.mark.e2e
OVERRIDES = ["lr=0.05", "model=linear", "optimizer=momentum", "reader=shuffled_index"]
TIMINGS = {"samples_per_second", "train_seconds"}
MACHINE_TAGS = ("lrlab.pid", "lrlab.pid_started", "lrlab.heartbeat", "mlflow.source.name", "mlflow.runName")

API = """
import json, sys, lrlab, lrlab.reproduce, lrlab.run  # the CLI modules loaded: lrlab.track is still the API's
cfg = lrlab.compose(*sys.argv[1:])
untracked = lrlab.train(cfg)
tracked = lrlab.track(cfg)
print(json.dumps({"run_id": tracked.run_id, "status": tracked.status,
                  "untracked": [r.train_loss for r in untracked.history],
                  "tracked": [r.train_loss for r in tracked.result.history]}))
"""


def test_the_api_records_what_the_cli_records(tmp_path: Path, tracking_uri: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    cli = subprocess.run(
        [sys.executable, "-m", "lrlab.run", *OVERRIDES, f"hydra.run.dir={tmp_path}/out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    api = subprocess.run(
        [sys.executable, "-c", API, *OVERRIDES], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert api.returncode == 0, api.stderr
    answer = json.loads(api.stdout.strip().splitlines()[-1])
    assert answer["status"] == "FINISHED" and answer["untracked"] == answer["tracked"]  # train() is track()'s numbers

    client = MlflowClient(tracking_uri)
    by_id = {r.info.run_id: r for r in all_runs(client)}
    from_api = by_id.pop(answer["run_id"])
    (from_cli,) = by_id.values()
    assert from_api.info.status == from_cli.info.status == "FINISHED"
    assert from_api.data.params == from_cli.data.params
    keep = lambda tags: {k: v for k, v in tags.items() if k not in MACHINE_TAGS}  # noqa: E731
    assert keep(from_api.data.tags) == keep(from_cli.data.tags)
    assert from_api.info.run_name == from_cli.info.run_name
    for key in set(from_cli.data.metrics) - TIMINGS:
        history = [
            [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)] for r in (from_api, from_cli)
        ]
        assert sorted(history[0]) == sorted(history[1]), key
    assert answer["tracked"] == [
        m.value for m in sorted(client.get_metric_history(answer["run_id"], "train_loss"), key=lambda m: m.step)
    ]
    artifacts = [{a.path for a in client.list_artifacts(r.info.run_id)} for r in (from_api, from_cli)]
    assert artifacts[0] == artifacts[1] == {"config.yaml", "params.json"}


def test_bad_input_from_python_is_one_clear_error() -> None:
    import lrlab
    from lrlab.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"^lrr: no such key"):
        lrlab.compose("+lrr=0.1")
    with pytest.raises(ConfigError, match=r"^model=foo is not an option"):
        lrlab.compose("model=foo")


def test_a_wheel_installed_elsewhere_runs_from_any_folder(tmp_path: Path) -> None:
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Built from a copy, so that setuptools' build/ folder lands under tmp_path, not in the checkout.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns(
        ".*", "build", "dist", "*.egg-info", "*.db*", "mlflow-artifacts", "multirun", "outputs"
    )
    shutil.copytree(REPO, source, symlinks=True, ignore=skip)
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("lrlab-*.whl")
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300
    )
    assert installed.returncode == 0, installed.stderr
    assert (site / "lrlab" / "conf" / "config.yaml").is_file()
    assert (site / "lrlab" / "conf" / "experiment" / "lr_sweep.yaml").is_file()  # the studies ship too
    # The wheel's lrlab, not the checkout's: PYTHONPATH comes before the editable install.
    env = {**os.environ, "PYTHONPATH": str(site), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    where = subprocess.run(
        # the wheel carries lrlab.core.engines too (compiling its kernel is a test of tests/unit/test_engines.py)
        [sys.executable, "-c", "import lrlab.sweep.compose as c, lrlab.core.engines.compiled as e; print(c.CONF_DIR)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert where.stdout.strip() == str(site / "lrlab" / "conf"), where.stderr
    for command, says in (
        ([sys.executable, "-m", "lrlab.run", "num_epochs=1", f"hydra.run.dir={tmp_path}/o"], "epoch 1"),
        ([sys.executable, "-m", "lrlab", "--help"], "lr: 0.03"),
        ([str(site / "bin" / "lrlab"), "--help"], "lr: 0.03"),
    ):
        done = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr)
        assert says in done.stdout, (command, done.stdout)
    (run,) = all_runs(MlflowClient(env["MLFLOW_TRACKING_URI"]))
    assert run.data.params["num_epochs"] == "1" and run.info.status == "FINISHED"
