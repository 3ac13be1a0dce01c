"""The Python API is a good citizen: it works inside a notebook's own Hydra app and from several threads, and
it leaves no global state (Hydra's, the environment, signal handlers) behind. Each test runs a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def python(script: str, *args: str, cwd: Path) -> dict:
    """Run ``script`` in a fresh interpreter; it prints one JSON line last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "_MLFLOW_", "LRLAB_"))}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


INSIDE_AN_APP = """
import json, sys, hydra, lrlab
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobRuntime
with hydra.initialize_config_dir(config_dir=sys.argv[1], version_base="1.2", job_name="notebook"):
    app = GlobalHydra.instance().hydra
    lr = lrlab.compose("lr=0.1").lr
    epochs = lrlab.compose("num_epochs=1").num_epochs
    foo = hydra.compose(config_name="config").foo
    same_app = GlobalHydra.instance().hydra is app
    base = str(hydra.version.getbase())
    name = JobRuntime.instance().get("name")
print(json.dumps({"lr": lr, "epochs": epochs, "foo": foo, "same_app": same_app, "base": base, "name": name,
                  "after": GlobalHydra.instance().is_initialized()}))
"""


def test_compose_inside_a_notebooks_own_hydra_app(tmp_path: Path) -> None:
    conf = tmp_path / "notebook_conf"
    conf.mkdir()
    (conf / "config.yaml").write_text("foo: 1\n")
    answer = python(INSIDE_AN_APP, str(conf), cwd=tmp_path)
    assert answer == {
        "lr": 0.1,
        "epochs": 1,
        "foo": 1,
        "same_app": True,
        "base": "1.2",
        "name": "notebook",
        "after": False,
    }


THREADS = """
import json, threading, lrlab
results, errors = {}, []
def work(t):
    for i in range(15):
        lr = (t * 15 + i + 1) / 1000
        try:
            results[(t, i)] = (lr, lrlab.compose(f"lr={lr}", f"seed={t}").lr)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(json.dumps({"errors": errors, "count": len(results), "wrong": [v for v in results.values() if v[0] != v[1]]}))
"""


@pytest.mark.soak_only  # make soak: a concurrency case; make test has the API from one other thread
def test_compose_from_six_threads(tmp_path: Path) -> None:
    answer = python(THREADS, cwd=tmp_path)
    assert answer == {"errors": [], "count": 90, "wrong": []}


NO_TRACES = """
import json, os, signal, sys, hydra, lrlab
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
def state():
    return {"env": dict(os.environ), "hydra_config": HydraConfig.initialized(),
            "global_hydra": GlobalHydra.instance().is_initialized(),
            "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)]}
cfg = lrlab.compose("num_epochs=1")
before = state()
plain = lrlab.track(cfg, tracking_uri=sys.argv[1]).status
after = state()
# in a notebook's Hydra app whose config is set: the same app and config after the run
with hydra.initialize_config_dir(config_dir=sys.argv[2], version_base="1.3"):
    HydraConfig.instance().set_config(hydra.compose(config_name="config", return_hydra_config=True))
    app, mine = GlobalHydra.instance().hydra, HydraConfig.instance().cfg
    inside = lrlab.track(cfg, tracking_uri=sys.argv[1]).status
    kept = GlobalHydra.instance().hydra is app and HydraConfig.instance().cfg is mine
print(json.dumps({"plain": plain, "inside": inside, "kept": kept, "before": before, "after": after}))
"""


def test_track_leaves_no_global_state_behind(tmp_path: Path, tracking_uri: str) -> None:
    conf = tmp_path / "notebook_conf"
    conf.mkdir()
    (conf / "config.yaml").write_text("foo: 1\n")
    answer = python(NO_TRACES, tracking_uri, str(conf), cwd=tmp_path)
    assert answer["plain"] == answer["inside"] == "FINISHED"
    before, after = answer["before"], answer["after"]
    assert sorted(set(after["env"]) - set(before["env"])) == []  # MLFLOW_HTTP_REQUEST_*, LRLAB_*
    assert {k: v for k, v in before["env"].items() if after["env"].get(k) != v} == {}  # changed or removed
    assert after == before and before["hydra_config"] is False and before["global_hydra"] is False
    assert answer["kept"]  # the notebook's Hydra app and its HydraConfig, the same objects


IN_A_THREAD = """
import json, signal, sys, threading, lrlab
cfg = lrlab.compose("num_epochs=3")
handler, out = signal.getsignal(signal.SIGINT), {}
def work():
    try:
        result = lrlab.track(cfg, tracking_uri=sys.argv[1])
        out.update(run_id=result.run_id, status=result.status)
    except BaseException as error:
        out.update(error=f"{type(error).__name__}: {error}")
thread = threading.Thread(target=work)
thread.start()
thread.join()
out["signal_kept"] = signal.getsignal(signal.SIGINT) is handler
print(json.dumps(out))
"""


def test_track_from_a_thread_other_than_the_main_one(tmp_path: Path, tracking_uri: str) -> None:
    answer = python(IN_A_THREAD, tracking_uri, cwd=tmp_path)
    assert "error" not in answer, answer["error"]
    assert answer["status"] == "FINISHED" and answer["signal_kept"]
    client = MlflowClient(tracking_uri)
    run = client.get_run(answer["run_id"])
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert steps == [1, 2, 3]
