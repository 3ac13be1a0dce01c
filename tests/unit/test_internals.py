"""The private parts of MLflow and Hydra that lrlab wraps still are what the wrappers were read against.

Each wrapper names the version it was read against; an upgrade fails here first, with the part that moved.
"""

from __future__ import annotations

import inspect
import sqlite3
from importlib import metadata
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from mlflow.tracking import MlflowClient

from lrlab.record import mlflow_internals
from lrlab.sweep import hydra_internals


def test_the_versions_are_those_the_wrappers_were_read_against() -> None:
    assert metadata.version("mlflow") == mlflow_internals.READ_AGAINST
    assert metadata.version("hydra-core") == hydra_internals.READ_AGAINST


def test_a_new_sqlite_store_and_experiment_keep_their_artifacts_beside_the_database(tmp_path: Path) -> None:
    db, artifacts = tmp_path / "new.db", (tmp_path / "artifacts").as_uri()
    mlflow_internals.create_sqlite_store(f"sqlite:///{db}", artifacts)
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
    assert {"alembic_version", "experiments", "runs", "metrics"} <= tables
    default = MlflowClient(f"sqlite:///{db}").get_experiment("0")
    assert default.artifact_location == f"{artifacts}/0"
    made = mlflow_internals.create_experiment(f"sqlite:///{db}", artifacts, "beside")
    assert MlflowClient(f"sqlite:///{db}").get_experiment(made).artifact_location == f"{artifacts}/{made}"


def test_the_http_request_takes_what_server_get_passes() -> None:
    from mlflow.utils.rest_utils import http_request

    accepted = inspect.signature(http_request).parameters
    assert {"host_creds", "endpoint", "method", "max_retries", "timeout", "raise_on_status"} <= set(accepted)


def test_the_basic_sweeper_is_a_sweeper_with_the_hooks_lrlab_extends() -> None:
    from hydra_plugins.lrlab_sweeper.lrlab_sweeper import LrlabSweeper

    sweeper = hydra_internals.BasicSweeper
    (base,) = LrlabSweeper.__bases__  # Hydra's plugin scan may load the module again: the same class by name
    assert (base.__module__, base.__qualname__) == (sweeper.__module__, sweeper.__qualname__)
    assert issubclass(sweeper, Sweeper)
    assert {"hydra_context", "task_function", "config"} <= set(inspect.signature(sweeper.setup).parameters)
    assert list(inspect.signature(sweeper.validate_batch_is_legal).parameters) == ["self", "batch"]


def test_overrides_dirname_is_spelled_as_hydra_spells_it() -> None:
    overrides = OverridesParser.create().parse_overrides(["lr=0.1", "batch_size=5", "+extra=a"])
    assert hydra_internals.get_overrides_dirname(overrides, exclude_keys=[], item_sep=",", kv_sep="=") == (
        "+extra=a,batch_size=5,lr=0.1"
    )


def test_the_basic_launcher_is_where_hydra_names_it() -> None:
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class

    import lrlab
    from lrlab.api import composition

    assert composition(lrlab.compose()).hydra.launcher._target_ == hydra_internals.BASIC_LAUNCHER  # the default
    launcher = get_class(hydra_internals.BASIC_LAUNCHER)
    assert issubclass(launcher, Launcher) and launcher.__name__ == "BasicLauncher"
