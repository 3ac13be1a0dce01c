"""The MLflow side of one run: params, batched metrics, artifacts, a heartbeat and its final status.

``MlflowClient`` with explicit run ids, not the fluent API's process-global active run, so that nested runs and runs
in worker processes never depend on what another part of the process started."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from lrlab.core.config import TABLE_KEYS, Config
from lrlab.record.keys import MAX_PARAM_VALUE, param_artifact, param_pointer, shorten
from lrlab.record.orphans import HEARTBEAT, HEARTBEAT_SECONDS, process_tags
from lrlab.record.store import experiment_id, open_client

MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
MAX_METRICS_PER_BATCH = 1000
FLUSH_SECONDS = 2.0  # buffered metrics (and the lines that wait for them) reach the store at least this often

FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
KILLED = RunStatus.to_string(RunStatus.KILLED)
RUNNING = RunStatus.to_string(RunStatus.RUNNING)


def dataset_input(cfg: Config) -> DatasetInput:
    """The training set as an MLflow input: synthetic data by its name, a digest of what generates it and its shape;
    a table (``dataset=csv``) as its file (``table_input``)."""
    if cfg.dataset.path is not None:
        return table_input(cfg)
    recipe = {k: v for k, v in asdict(cfg.dataset).items() if k not in TABLE_KEYS}
    recipe["data_seed"] = cfg.stream_seed("data")
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
    num_examples, num_features = cfg.dataset.shape()
    shape = {"features": [num_examples, num_features], "labels": [num_examples, 1]}
    dataset = Dataset(
        name=cfg.dataset.name,
        digest=digest,
        source_type="code",
        source=json.dumps({"tags": {"generator": "lrlab.data.synthetic_data", **recipe}}),
        schema=json.dumps({"tensor_shapes": shape}),
        profile=json.dumps({"num_rows": num_examples, "num_features": num_features}),
    )
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])


TABLE_DIGEST_CHARS = 16  # of the file's sha256: MLflow keeps at most 36 characters of a dataset's digest
MAX_INPUT_TAG = 500  # MLflow's limit for an input tag's value


def table_input(cfg: Config) -> DatasetInput:
    """A table as an MLflow input: the file (source ``local``, its path; the digest of its bytes; its columns, as
    MLflow's column specs, and rows), and, on the run's link to it, the columns this run uses (input tags
    ``lrlab.target`` and ``lrlab.features``): runs that use other columns of one file share one dataset."""
    table = cfg.dataset.table()
    columns = [
        {"type": "double" if number else "string", "name": name, "required": True}
        for name, number in zip(table.columns, table.numeric, strict=True)
    ]
    profile = {"num_rows": table.num_examples, "num_columns": len(table.columns), "sha256": table.sha256}
    dataset = Dataset(
        name=cfg.dataset.name,
        digest=table.sha256[:TABLE_DIGEST_CHARS],
        source_type="local",
        source=json.dumps({"uri": table.path}),
        schema=json.dumps({"mlflow_colspec": columns}),
        profile=json.dumps(profile),
    )
    features = shorten(",".join(table.features), MAX_INPUT_TAG)  # all of them are in the run's params.json
    used = [InputTag("lrlab.target", shorten(table.target, MAX_INPUT_TAG)), InputTag("lrlab.features", features)]
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training"), *used])


def finished_run(
    client: MlflowClient, experiment_id: str, config_hash: str, code_digest: str | None = None
) -> Run | None:
    """The newest FINISHED run of this config in the experiment (made by the code ``code_digest``, if given)."""
    query = f"tags.`lrlab.config_hash` = '{config_hash}' and attributes.status = 'FINISHED'"
    if code_digest is not None:
        query += f" and tags.`lrlab.code_digest` = '{code_digest}'"
    found = client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def outcome(run: Run) -> str:
    """A run's status, with DIVERGED for a run that ended FAILED because it diverged (tag lrlab.diverged)."""
    return "DIVERGED" if run.data.tags.get("lrlab.diverged") == "true" else run.info.status


GROUP_TAG = "lrlab.group"  # a group run of a sweep over seeds (lrlab/sweep/groups.py)


def child_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The runs nested directly under ``parent_id``."""
    return _search(client, experiment_id, _under(parent_id))


def running_jobs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """A sweep's job runs still RUNNING, under the parent or under its group runs (ended or not). Asks the
    store for RUNNING runs and group runs only: a search loads every run it finds, params and metrics too."""
    running = "attributes.status = 'RUNNING'"
    found = _search(client, experiment_id, f"{_under(parent_id)} and {running}")
    jobs = [run for run in found if run.data.tags.get(GROUP_TAG) != "true"]
    for group in _search(client, experiment_id, f"{_under(parent_id)} and tags.`{GROUP_TAG}` = 'true'"):
        jobs += _search(client, experiment_id, f"{_under(group.info.run_id)} and {running}")
    return jobs


def _under(parent_id: str) -> str:
    """The search filter of the runs nested directly under ``parent_id``."""
    return f"tags.`mlflow.parentRunId` = '{parent_id}'"


def _search(client: MlflowClient, experiment_id: str, query: str) -> list[Run]:
    return list(client.search_runs([experiment_id], query, max_results=10000))


def sweep_jobs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """A sweep's job runs in job order: its children, or in a sweep over seeds its groups' children."""
    jobs = []
    for run in child_runs(client, experiment_id, parent_id):
        if run.data.tags.get(GROUP_TAG) == "true":
            jobs += child_runs(client, experiment_id, run.info.run_id)
        else:
            jobs.append(run)
    return sorted(jobs, key=lambda r: int(r.data.tags.get("lrlab.job_num", "0")))


class Tracker:
    """One MLflow run. Metrics are buffered and written with ``log_batch``; ``end`` flushes first."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._metrics: list[Metric] = []
        self._announce: list[Callable[[], None]] = []
        self._last_flush = time.monotonic()
        self._stop_beating = threading.Event()
        self._heart = threading.Thread(target=self._beat, name=f"lrlab-heartbeat-{run_id[:8]}", daemon=True)
        self._heart.start()

    @classmethod
    def start(
        cls,
        tracking_uri: str,
        experiment_name: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        experiment: str | None = None,
        create: bool = True,
    ) -> Tracker:
        """A new run in experiment ``experiment_name`` (whose id, when the caller has it, is ``experiment``)."""
        client = open_client(tracking_uri, create)  # False: the sweep's store, which must still be there
        experiment = experiment or experiment_id(client, tracking_uri, experiment_name)
        run_name = shorten(run_name)
        all_tags = {MLFLOW_RUN_NAME: run_name, **process_tags(), **(tags or {})}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = client.create_run(experiment, tags=all_tags, run_name=run_name)
        return cls(client, run.info.run_id, experiment)

    def _beat(self) -> None:
        while not self._stop_beating.wait(HEARTBEAT_SECONDS):
            # A missed beat is harmless; the store's errors surface in the run's own writes.
            with contextlib.suppress(Exception):
                self.client.set_tag(self.run_id, HEARTBEAT, f"{time.time():.0f}", synchronous=True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params as strings; a null setting is left out rather than logged as 'None'.

        A value longer than MLflow's limit goes whole into the artifact ``params/<key>.txt`` (written first),
        and the param holds its digest and that name (``param_pointer``): never a value cut short.
        """
        items = []
        for key, value in params.items():
            if value is None:
                continue
            text = str(value)
            if len(text) > MAX_PARAM_VALUE:
                self.log_text(text, param_artifact(key))
                text = param_pointer(key, text)
            items.append(Param(key, text))
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(key, str(value)) for key, value in tags.items()]
        self.client.log_batch(self.run_id, tags=items, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int, announce: Callable[[], None] | None = None) -> None:
        """Buffer one step's metrics; ``announce`` runs once they are written (write it, then print it)."""
        timestamp = int(time.time() * 1000)
        self._metrics += [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        if announce is not None:
            self._announce.append(announce)
        if len(self._metrics) >= MAX_METRICS_PER_BATCH or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered, then announce it."""
        while self._metrics:
            batch = self._metrics[:MAX_METRICS_PER_BATCH]
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            self._metrics = self._metrics[MAX_METRICS_PER_BATCH:]
        announce, self._announce = self._announce, []
        for line in announce:
            line()
        self._last_flush = time.monotonic()

    def log_inputs(self, datasets: list[DatasetInput]) -> None:
        """Log dataset inputs; parallel jobs that log the same dataset at once race, so retry a conflict."""
        for attempt in range(5):
            try:
                self.client.log_inputs(self.run_id, datasets=datasets)
                return
            except MlflowException as error:
                if ("UNIQUE constraint" not in str(error) and "IntegrityError" not in str(error)) or attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))  # the other writer's row is there now: the retry reuses it

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(dictionary), artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def abandon(self) -> None:
        """Stop the heartbeat of a run that can no longer be written (its store is gone)."""
        self._stop_beating.set()

    def end(self, status: str) -> None:
        """Flush what is buffered, then set the final status (FINISHED, FAILED or KILLED), whatever the flush did."""
        self._stop_beating.set()
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)
