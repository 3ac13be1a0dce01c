"""Compare a sweep's runs in the terminal: ``python -m lrlab.compare [PARENT_RUN_ID | EXPERIMENT]``.

One row per job, or per group in a sweep over seeds, with only the params that vary between the rows
(``--all`` shows every param), then the final metrics, the status and the run id. Everything is read
from MLflow, so it works on any store and any server (``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``,
else ./mlflow.db). Given an experiment name, or nothing (the experiment ``lrlab``), it shows that
experiment's latest sweep.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from typing import TYPE_CHECKING

from lrlab.record.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Experiment

JOB_METRICS = ("train_loss", "w_error", "b_error", "excess_loss", "train_seconds")
GROUP_METRICS = tuple(
    f"{metric}_{part}"
    for metric in ("train_loss", "w_error", "b_error")
    for part in ("mean", "std", "ci95_low", "ci95_high")
)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lrlab.compare", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default="lrlab", help="a sweep's parent run id, or an experiment name")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    parser.add_argument("--sort", metavar="METRIC", help="sort the rows by this column, smallest first")
    parser.add_argument("--all", action="store_true", help="show every param, not only those that vary")
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from lrlab.record.redact import redact
    from lrlab.sweep.console import quiet_libraries, user_error_line

    quiet_libraries()
    try:
        table = compare(args.sweep, args.tracking_uri, args.sort, args.all)
    except Exception as error:
        reported = user_error_line(error)
        if reported is None:
            raise
        print(f"lrlab: error: {redact(reported[0])}", file=sys.stderr)
        return reported[1]
    try:
        print(table.to_csv(index=False) if args.csv else table.to_string(index=False, na_rep="–"), flush=True)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def compare(
    sweep: str, tracking_uri: str | None = None, sort: str | None = None, every_param: bool = False
) -> pd.DataFrame:
    """The comparison table of one sweep: its parent's run id, or an experiment name for its latest sweep."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from lrlab.record.redact import redact_uri
    from lrlab.record.store import read_client, resolve_tracking_uri
    from lrlab.record.tracking import GROUP_TAG, child_runs, outcome, sweep_jobs

    uri = resolve_tracking_uri(tracking_uri)
    client = read_client(uri)  # only reads: a mistyped path is refused, never created
    parent = None
    if RUN_ID.match(sweep):
        try:
            parent = client.get_run(sweep)
        except MlflowException:
            parent = None
    if parent is None:
        experiment = client.get_experiment_by_name(sweep)
        if experiment is None:
            raise UsageError(f"sweep={sweep!r}: neither a run id nor an experiment in {redact_uri(uri)}")
        if experiment.lifecycle_stage == "deleted":
            raise _deleted(sweep, experiment)
        latest = ["attributes.start_time DESC"]
        found = client.search_runs(
            [experiment.experiment_id], "tags.`lrlab.sweep` = 'true'", max_results=1, order_by=latest
        )
        if not found:
            raise UsageError(f"sweep={sweep!r}: the experiment has no sweep")
        parent = found[0]
    elif parent.data.tags.get("lrlab.sweep") != "true":
        raise UsageError(f"sweep={sweep!r} is a run, not a sweep's parent (its tag lrlab.sweep is not set)")
    experiment_id, parent_id = parent.info.experiment_id, parent.info.run_id
    experiment = client.get_experiment(experiment_id)
    if experiment.lifecycle_stage == "deleted":  # its runs are deleted with it
        raise _deleted(sweep, experiment)
    if parent.info.lifecycle_stage == "deleted":
        restore = f"mlflow runs restore --run-id {parent_id}"
        raise UsageError(f"sweep={sweep!r}: the sweep's parent run is deleted; restore it ({restore})")
    groups = [r for r in child_runs(client, experiment_id, parent_id) if r.data.tags.get(GROUP_TAG) == "true"]
    groups.sort(key=lambda r: r.info.start_time)  # created in the sweep's order
    runs = groups or sweep_jobs(client, experiment_id, parent_id)
    if not runs:  # never an empty table
        raise UsageError(f"sweep={sweep!r}: the sweep {parent_id} has no job runs (none started, or all are deleted)")
    metrics = GROUP_METRICS if groups else JOB_METRICS
    params = sorted({key for run in runs for key in run.data.params})
    if not every_param:
        params = [k for k in params if len({run.data.params.get(k) for run in runs}) > 1]
    rows = []
    for run in runs:
        row: dict[str, object] = {"group" if groups else "run": run.info.run_name}
        row |= {key: run.data.params.get(key, "") for key in params}
        if groups:
            row["n"] = int(run.data.metrics.get("n_replicates", 0))
            row["diverged"] = int(run.data.metrics.get("n_diverged", 0))
        row |= {key: run.data.metrics.get(key, math.nan) for key in metrics}
        row["status"] = outcome(run)  # a group run is never tagged diverged: its own status
        row["run_id"] = run.info.run_id
        rows.append(row)
    table = pd.DataFrame(rows)
    for key in params:  # numbers sort as numbers (lr 0.01 < 0.1 < 1.0)
        numeric = pd.to_numeric(table[key], errors="coerce")
        if numeric.notna().all():
            table[key] = numeric
    if sort is not None:
        if sort not in table.columns:
            raise UsageError(f"--sort {sort}: not a column; choose one of {', '.join(map(str, table.columns))}")
        table = table.sort_values(sort, na_position="last", kind="stable")
    return table


def _deleted(sweep: str, experiment: Experiment) -> UsageError:
    restore = f"mlflow experiments restore --experiment-id {experiment.experiment_id}"
    return UsageError(f"sweep={sweep!r}: the experiment {experiment.name!r} is deleted; restore it ({restore})")


if __name__ == "__main__":
    sys.exit(main())
