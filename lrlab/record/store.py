"""Where the record lives: the tracking URI, its checks, and a SQLite store created whole or not at all.

- ``resolve_tracking_uri``: ``tracking_uri=``, else $MLFLOW_TRACKING_URI, else ./mlflow.db.
- ``check_store``: refuse a URI that cannot work, in one line and before any run exists.
- ``read_client``: a client that reads an existing store (compare, reproduce) and never creates one.
- ``ensure_store``: a new SQLite store is created and migrated by exactly one process, under a lock file
  beside the database, into a temporary file that is renamed into place when complete. Any number of
  concurrent starters, and an interrupt at any moment, leave either no store or a complete one.
- ``experiment_id``: experiments that lrlab creates in a SQLite store keep their artifacts beside the
  database (``<db stem>-artifacts/<experiment id>``), wherever lrlab was started from.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from filelock import FileLock, Timeout

from lrlab.record.errors import StoreUnreachable, UsageError
from lrlab.record.mlflow_internals import create_experiment, create_sqlite_store, server_get
from lrlab.record.redact import redact_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# MLflow is imported where it is used: checking a SQLite URI or a scheme (the CLI's refusals) needs none.

SQLITE_HEADER = b"SQLite format 3\x00"
LOCK_SECONDS = 120.0  # far longer than creating a store takes: a lock held this long is not a store being made
DATABASES = ("postgresql", "mysql", "mssql")
# SQLAlchemy's name of a driver -> (its module, its pip package). SQLAlchemy 2.1 reads a bare postgresql:// with
# psycopg (3); lrlab installs psycopg2 (make server's store), which postgresql+psycopg2:// names.
DRIVERS = {
    "psycopg2": ("psycopg2", "psycopg2-binary"),
    "psycopg": ("psycopg", "psycopg[binary]"),
    "mysqldb": ("MySQLdb", "mysqlclient"),
    "pymysql": ("pymysql", "pymysql"),
    "pyodbc": ("pyodbc", "pyodbc"),
}


def bound_http_retries() -> None:
    """MLflow retries a dead server for minutes by default; bound it unless the user has chosen."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def resolve_tracking_uri(configured: str | None, cwd: Path | None = None) -> str:
    """``tracking_uri=`` on the command line, else $MLFLOW_TRACKING_URI, else ./mlflow.db (SQLite); a relative
    SQLite path is taken from ``cwd`` (default: the current folder)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    return absolute_uri(uri, cwd)


def absolute_uri(uri: str, cwd: Path | None = None) -> str:
    """``uri`` with a SQLite store's path made absolute (from ``cwd``): the same store from any folder."""
    if not uri.startswith("sqlite:///"):
        return uri
    return f"sqlite:///{(cwd or Path.cwd()) / uri.removeprefix('sqlite:///')}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (absolute, or relative to the current folder)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).absolute()


def artifact_root(uri: str) -> str | None:
    """Where a SQLite store's new experiments keep their artifacts: a folder beside the database."""
    path = sqlite_path(uri)
    return None if path is None else (path.parent / f"{path.stem}-artifacts").as_uri()


def _fail(uri: str, why: str) -> UsageError:
    return UsageError(f"tracking_uri={redact_uri(uri)}: {why}")


def _check_sqlite(uri: str, write: bool = True) -> None:
    """``write``: lrlab will write to it (or create it); otherwise it must exist and be readable."""
    path = sqlite_path(uri)
    if path is None or str(path) in ("", "/") or uri.startswith("sqlite:///:memory:"):
        raise _fail(uri, "a SQLite URI reads sqlite:///path/to/mlflow.db (an in-memory store keeps nothing)")
    if "?" in uri:
        raise _fail(uri, "query options (?...) are not supported: give the database file alone")
    folder = path.parent
    if not write and not path.exists() and not path.is_symlink():
        raise _fail(uri, f"no store there: {path} does not exist (check the path, or $MLFLOW_TRACKING_URI)")
    if write and (not folder.is_dir() or not os.access(folder, os.W_OK)):
        raise _fail(uri, f"the folder {folder} does not exist or is not writable")
    if path.is_dir():
        raise _fail(uri, f"{path} is a folder, not a database file")
    if (path.exists() and not path.is_file()) or (path.is_symlink() and not path.resolve().is_file()):
        raise _fail(uri, f"{path} is not a regular file (a device, a pipe...): lrlab would replace it")
    if path.resolve().is_relative_to("/proc") or path.resolve().is_relative_to("/sys"):
        raise _fail(uri, f"{path} is in a kernel file system, not a place for a database")
    if write and (not path.exists() or path.stat().st_size == 0):
        return  # ensure_store creates it
    if not write and path.stat().st_size == 0:  # MLflow would write a new store into it
        raise _fail(uri, f"{path} is an empty file, not an MLflow store")
    if not os.access(path, os.R_OK | os.W_OK if write else os.R_OK):
        raise _fail(uri, f"{path} is not readable{' and writable' if write else ''} by this user")
    with path.open("rb") as file:
        if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise _fail(uri, f"{path} is not a SQLite database")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
    except sqlite3.DatabaseError as error:
        raise _fail(uri, f"{path} cannot be read as a database ({error})") from None
    if "alembic_version" not in tables or "experiments" not in tables:
        raise _fail(uri, f"{path} is a SQLite database but not an MLflow store")


def probe_server(uri: str, timeout: float = 5.0) -> None:
    """Ask an MLflow server for /health and one authenticated call, through MLflow's own HTTP stack,
    so that ``user:password@`` URIs and MLFLOW_TRACKING_USERNAME/PASSWORD work as they do for runs."""
    from mlflow.exceptions import MlflowException

    try:
        health = server_get(uri, "/health", timeout)
        if health.status_code == 200:
            answer = server_get(uri, "/api/2.0/mlflow/experiments/search", timeout, max_results=1)
        else:
            answer = health
    except (MlflowException, OSError) as error:
        reason = str(error).split(" with exception ")[-1][:200]
        raise _fail(
            uri,
            f"no MLflow server answered ({reason}); start one with `make ui` or "
            "`mlflow server --host 127.0.0.1 --port 5000`, or unset MLFLOW_TRACKING_URI",
        ) from None
    if answer.status_code in (401, 403):
        raise _fail(
            uri,
            f"the server refused the credentials (HTTP {answer.status_code}); give them as "
            "http://user:password@host:port or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        )
    if answer.status_code != 200:
        raise _fail(uri, f"the server answered HTTP {answer.status_code}; is it an MLflow tracking server?")


def check_store(uri: str, timeout: float = 5.0, write: bool = True) -> None:
    """Refuse a tracking URI that cannot work, in seconds and before any run is created. ``write=False``: a
    store that is only read, which must exist (its folder and file need not be writable)."""
    scheme = urlsplit(uri).scheme.split("+")[0]
    if scheme == "sqlite":
        _check_sqlite(uri, write)
    elif scheme in ("http", "https"):
        probe_server(uri, timeout)
    elif scheme in DATABASES:
        _check_driver(uri, scheme)
    elif scheme == "file":
        raise _fail(
            uri,
            "MLflow 3 keeps no file store: use sqlite:///path/to/mlflow.db or an http(s)://host:port server",
        )
    elif scheme == "":
        raise _fail(uri, "not a tracking URI: use sqlite:///path/to/mlflow.db or http(s)://host:port")
    elif scheme != "databricks":
        raise _fail(uri, f"unknown scheme {scheme!r}; use sqlite:///path/to/mlflow.db or http(s)://host:port")


def _check_driver(uri: str, scheme: str) -> None:
    """The database driver that SQLAlchemy would load for ``uri`` is installed (it is imported only at connect)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        driver = str(make_url(uri).get_dialect().driver)
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise _fail(uri, f"SQLAlchemy cannot read it ({error})") from None
    module, package = DRIVERS.get(driver, (driver, driver))
    if importlib.util.find_spec(module) is None:
        hint = "; lrlab installs psycopg2: write postgresql+psycopg2://" if scheme == "postgresql" else ""
        raise _fail(uri, f"its {scheme} driver {driver} is not installed (pip install {package}){hint}")


def ensure_store(uri: str) -> None:
    """Create a new SQLite store atomically (nothing to do for an existing store or another scheme)."""
    path = sqlite_path(uri)
    if path is None or (path.exists() and path.stat().st_size > 0):
        return
    if path.exists() and not path.is_file():
        raise _fail(uri, f"{path} is not a regular file: lrlab would replace it")
    lock = FileLock(path.with_name(path.name + ".lock"), timeout=LOCK_SECONDS)
    try:
        lock.acquire()
    except (Timeout, OSError) as error:
        raise _fail(uri, f"no lock beside the database within {LOCK_SECONDS:.0f} s ({error})") from None
    try:
        if path.exists() and path.stat().st_size > 0:
            return  # another process created it while this one waited
        partial = path.with_name(f".{path.name}.{os.getpid()}.creating")
        try:
            create_sqlite_store(f"sqlite:///{partial}", artifact_root(uri))
            os.replace(partial, path)  # atomic: the store appears complete or not at all
        finally:
            partial.unlink(missing_ok=True)
    finally:
        lock.release()


def open_client(uri: str, create: bool = True) -> MlflowClient:
    """A client of the store at ``uri``, which exists when this returns. ``create=False``: a store that must
    exist already (a sweep's, made by its parent): one that is gone is never made again."""
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)
    if not create and path is not None and not path.is_file():
        raise StoreUnreachable(StoreUnreachable.gone(path))
    ensure_store(uri)
    return MlflowClient(uri)


def read_client(uri: str) -> MlflowClient:
    """A client of the store at ``uri``, which must exist: reading never creates a store (a mistyped path
    would get a new, empty one) and needs no write permission."""
    from mlflow.tracking import MlflowClient

    check_store(uri, write=False)
    return MlflowClient(uri)


# An experiment of model training, not GenAI. MLflow 3.17.2's UI reads its own switch instead; the tag is for the
# store's other readers and the UIs that read it.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing (safe when several processes race to create it),
    marked as model training for the MLflow UI unless it says otherwise already.

    In a SQLite store, a new experiment keeps its artifacts beside the database; an experiment that
    exists keeps its location.
    """
    found = _experiment_id(client, uri, name)
    tags = client.get_experiment(found).tags
    for key, value in EXPERIMENT_KIND.items():
        if key not in tags:
            client.set_experiment_tag(found, key, value)
    return found


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise UsageError(
            f"experiment_name={name}: this experiment is deleted; restore it (mlflow experiments restore) "
            "or choose another name"
        )
    if experiment is not None:
        return str(experiment.experiment_id)
    root = artifact_root(uri)
    try:
        if root is not None:
            return create_experiment(uri, root, name)
        return str(client.create_experiment(name))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def is_server(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def server_answers(uri: str) -> bool:
    """Whether the tracking server behind ``uri`` answers /health now."""
    from mlflow.exceptions import MlflowException

    try:
        answer = server_get(uri, "/health", timeout=5)
    except (MlflowException, OSError):
        return False
    return bool(answer.status_code == 200)
