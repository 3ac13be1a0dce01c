"""The MLflow side of lrlab: one tracked run, its params, batched metrics, artifacts and final status.

Only this module (and the sweep callback) talks to MLflow. It uses ``MlflowClient`` with explicit run
ids rather than the fluent API's process-global active run, so runs in worker processes and nested runs
never depend on what another part of the process has started.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from lrlab.config import Config
from lrlab.errors import UsageError

MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
MAX_METRICS_PER_BATCH = 1000
FLUSH_SECONDS = 2.0  # buffered metrics reach the store at least this often


def resolve_tracking_uri(configured: str | None) -> str:
    """``tracking_uri=`` on the command line, else $MLFLOW_TRACKING_URI, else ./mlflow.db (SQLite)."""
    if configured:
        return configured
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def redact(uri: str) -> str:
    """The URI with any password replaced by ***, for printing and logging."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Refuse a tracking URI that cannot work, in seconds and before any run is created.

    sqlite: the folder of the file must exist and be writable; http(s): a server must answer /health.
    """
    scheme = urlsplit(uri).scheme
    if scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        if path is None:
            raise UsageError(f"tracking_uri={redact(uri)}: a SQLite URI reads sqlite:///path/to/mlflow.db")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UsageError(f"tracking_uri={redact(uri)}: the folder {folder} does not exist or is not writable")
    elif scheme in ("http", "https"):
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout) as answer:
                answer.read()
        except (OSError, ValueError) as error:
            raise UsageError(
                f"tracking_uri={redact(uri)}: no MLflow server answered ({error}); start one with "
                "`make ui` or `mlflow server --host 127.0.0.1 --port 5000`, or unset MLFLOW_TRACKING_URI"
            ) from None
    elif scheme not in ("", "file", "databricks", "postgresql", "mysql", "mssql"):
        raise UsageError(
            f"tracking_uri={redact(uri)}: unknown scheme {scheme!r}; "
            "use sqlite:///path, http(s)://host:port or a folder"
        )


def bound_http_retries() -> None:
    """MLflow retries a dead server for minutes by default; bound it unless the user has chosen."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing (safe when several processes race to create it)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested mapping as dotted keys; lists stay whole (``dataset.true_w``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def dataset_input(cfg: Config) -> DatasetInput:
    """The synthetic training set as an MLflow input: its name, a digest of what generates it, its shape."""
    recipe = {**asdict(cfg.dataset), "data_seed": cfg.stream_seed("data")}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
    shape = {"features": [cfg.dataset.num_examples, len(cfg.dataset.true_w)], "labels": [cfg.dataset.num_examples, 1]}
    dataset = Dataset(
        name=cfg.dataset.name,
        digest=digest,
        source_type="code",
        source=json.dumps({"tags": {"generator": "lrlab.data.synthetic_data", **recipe}}),
        schema=json.dumps({"tensor_shapes": shape}),
        profile=json.dumps({"num_rows": cfg.dataset.num_examples, "num_features": len(cfg.dataset.true_w)}),
    )
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])


def finished_run(client: MlflowClient, experiment_id: str, config_hash: str) -> Run | None:
    """A FINISHED run of this config in the experiment, if there is one."""
    query = f"tags.`lrlab.config_hash` = '{config_hash}' and attributes.status = 'FINISHED'"
    found = client.search_runs([experiment_id], query, max_results=1)
    return found[0] if found else None


class Tracker:
    """One MLflow run. Metrics are buffered and written with ``log_batch``; ``end`` flushes first."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._metrics: list[Metric] = []
        self._last_flush = time.monotonic()

    @classmethod
    def start(
        cls,
        tracking_uri: str,
        experiment_name: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> Tracker:
        client = MlflowClient(tracking_uri)
        all_tags = {MLFLOW_RUN_NAME: run_name, **(tags or {})}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = client.create_run(experiment_id(client, experiment_name), tags=all_tags, run_name=run_name)
        return cls(client, run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(key, str(value)) for key, value in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(key, str(value)) for key, value in tags.items()]
        self.client.log_batch(self.run_id, tags=items, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer one step's metrics; written in one batch when the buffer is full or old enough."""
        timestamp = int(time.time() * 1000)
        self._metrics += [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        if len(self._metrics) >= MAX_METRICS_PER_BATCH or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        while self._metrics:
            batch, self._metrics = self._metrics[:MAX_METRICS_PER_BATCH], self._metrics[MAX_METRICS_PER_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
        self._last_flush = time.monotonic()

    def log_inputs(self, datasets: list[DatasetInput]) -> None:
        self.client.log_inputs(self.run_id, datasets=datasets)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(dictionary), artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def end(self, status: str) -> None:
        """Flush what is buffered, then set the final status (FINISHED, FAILED or KILLED)."""
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)


FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
KILLED = RunStatus.to_string(RunStatus.KILLED)
