"""Shared fixtures: the real Hydra config, a real SQLite MLflow store under tmp_path, the real CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from lrlab.core.config import Config
from lrlab.sweep.compose import register_configs, to_config
from tests.servers import LrlabServer, lrlab_server, reachable_folder

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

register_configs()


@pytest.fixture
def compose_cfg() -> Iterator[Callable[..., DictConfig]]:
    """Compose conf/config.yaml with overrides, as Hydra does for a run."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides, **kw: compose(config_name="config", overrides=list(overrides), **kw)


@pytest.fixture
def make_cfg(compose_cfg: Callable[..., DictConfig]) -> Callable[..., Config]:
    """A typed, validated Config from overrides."""
    return lambda *overrides: to_config(compose_cfg(*overrides))


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite store per session (about 1.3 s); tests copy it (milliseconds)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates the schema
    return path


@pytest.fixture
def tracking_uri(store_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "mlflow.db"
    shutil.copy(store_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri)


@pytest.fixture
def run_cli(tmp_path: Path, tracking_uri: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The real CLI in a subprocess, writing only under tmp_path."""

    def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "lrlab.run",
            *args,
            f"hydra.run.dir={tmp_path}/outputs",
            f"hydra.sweep.dir={tmp_path}/multirun",
        ]
        full_env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, **(env or {})}
        return subprocess.run(
            command, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


@pytest.fixture(scope="module")
def pg_server_module() -> Iterator[LrlabServer]:
    """``python -m lrlab.tools.server`` (what ``make server`` runs) over a new PostgreSQL cluster: one per module.

    Skipped where PostgreSQL's binaries are missing (.ci/run installs them).
    """
    from lrlab.tools.server import find_pg_bin

    if find_pg_bin() is None:
        pytest.skip("no PostgreSQL binaries (apt-get install postgresql)")
    folder = reachable_folder("lrlab-pg-")
    server = None
    try:
        server = lrlab_server(folder / "server")
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_server(pg_server_module: LrlabServer) -> LrlabServer:
    """The module's PostgreSQL-backed server, running: ``.uri``, ``.folder`` (its --dir), ``.backend``, ``.stop()``.

    A test may stop it (SIGINT, as Ctrl-C); the next test that asks for it gets it started again on the same
    folder, whatever order the tests run in.
    """
    if pg_server_module.process is None:
        pg_server_module.start()
    return pg_server_module


@pytest.fixture
def run_reproduce(tracking_uri: str) -> Callable[[str], subprocess.CompletedProcess[str]]:
    """``python -m lrlab.reproduce RUN_ID`` in a subprocess against the test's store."""

    def run(run_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lrlab.reproduce", run_id],
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """Under ``make soak`` (LRLAB_SOAK > 1): how many repetitions of each case passed and how many were lost."""
    if int(os.environ.get("LRLAB_SOAK", "1")) <= 1:
        return
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome == "passed":
                continue
            case = re.sub(r"(-|\[)\d+\]$", lambda m: "]" if m.group(1) == "-" else "", report.nodeid)
            counts[case]["passed" if outcome == "passed" else "lost"] += 1
    terminalreporter.section("soak: repetitions per case")
    for case, count in sorted(counts.items()):
        terminalreporter.write_line(f"{count['passed']:>4} passed {count['lost']:>4} lost   {case}")


def option_name(group: str, option: str) -> str:
    """The ``name`` an option sets: its own for an Enum's member, what its preset file says otherwise."""
    preset = CONF / group / f"{option}.yaml"
    return str(OmegaConf.load(preset).name) if preset.is_file() else option
