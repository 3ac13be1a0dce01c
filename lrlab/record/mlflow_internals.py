"""The parts of MLflow that lrlab uses without a public API, in one place. Read against mlflow 3.17.2;
``tests/unit/test_internals.py`` fails when an upgrade changes them."""

from __future__ import annotations

from typing import Any

READ_AGAINST = "3.17.2"


def create_sqlite_store(db_uri: str, artifact_root: str | None) -> None:
    """Create the tables of a new SQLite store at ``db_uri`` (MLflow's migrations), then let it go."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(db_uri, artifact_root)
    store.engine.dispose()


def create_experiment(db_uri: str, artifact_root: str, name: str) -> str:
    """A new experiment in a SQL store whose artifacts go under ``artifact_root/<experiment id>`` (``MlflowClient``
    would put them under ``./mlruns`` of whatever folder runs it)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return str(SqlAlchemyStore(db_uri, artifact_root).create_experiment(name))


def server_get(uri: str, path: str, timeout: float, **params: Any) -> Any:
    """One GET to the tracking server at ``uri`` (its ``requests`` response), with MLflow's credentials for it, no
    retries and a timeout: it tells a server that answers from one that is gone."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    extra = {"params": params} if params else {}
    return http_request(
        get_default_host_creds(uri), path, "GET", max_retries=0, timeout=timeout, raise_on_status=False, **extra
    )
