"""A sweep's summary, read back from MLflow: the table of its jobs, the overlay, and theory pictures.

Conclusions come only from runs that FINISHED with finite values: a diverged or killed run is listed in
the table with its status, but it is not a point of a fitted slope or a theory picture.
"""

from __future__ import annotations

import math

import numpy as np
from mlflow.entities import Run

from lrlab import report
from lrlab.tracking import FAILED, FINISHED, KILLED, Tracker, finished_run

MIN_SLOPE_SIZES = 3  # a slope through fewer distinct sizes confirms nothing


def children(parent: Tracker) -> list[Run]:
    found = parent.client.search_runs(
        [parent.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'", max_results=10000
    )
    return sorted(found, key=lambda r: int(r.data.tags.get("lrlab.job_num", "0")))


def outcome(run: Run) -> str:
    return "DIVERGED" if run.data.tags.get("lrlab.diverged") == "true" else run.info.status


def concluded(run: Run, metric: str) -> bool:
    """Whether a run may carry a conclusion about ``metric``: FINISHED, with a finite value of it."""
    value = run.data.metrics.get(metric, math.nan)
    return run.info.status == FINISHED and math.isfinite(value) and abs(value) < 1e300


def skipped(parent: Tracker, runs: list[Run], planned: dict[str, str]) -> list[Run]:
    """The FINISHED runs that planned jobs reused instead of running again (rerun=false)."""
    ran = {run.data.tags.get("lrlab.config_hash") for run in runs}
    found = (finished_run(parent.client, parent.experiment_id, identity) for identity in planned.keys() - ran)
    return [run for run in found if run is not None]


def summarise(parent: Tracker, keys: list[str], planned: dict[str, str]) -> list[str]:
    """Log the overlay and the summary table on the parent, print the table; return the failed jobs."""
    runs = children(parent)
    reused = skipped(parent, runs, planned)
    rows, curves, failed = [], {}, []
    for run in runs + reused:
        name = planned.get(run.data.tags.get("lrlab.config_hash", ""), run.info.run_name or run.info.run_id)
        final = run.data.metrics
        rows.append(
            {
                "run": name,
                **{key: run.data.params.get(key, "") for key in keys},
                "train_loss": final.get("train_loss"),
                "w_error": final.get("w_error"),
                "b_error": final.get("b_error"),
                "train_seconds": final.get("train_seconds"),
                "status": "SKIPPED" if run in reused else outcome(run),
                "run_id": run.info.run_id,
            }
        )
        history = parent.client.get_metric_history(run.info.run_id, "train_loss")
        curves[name] = [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]
        if outcome(run) in (FAILED, KILLED):
            failed.append(name)
    order = list(planned.values())
    rows.sort(key=lambda row: order.index(str(row["run"])) if row["run"] in order else len(order))
    table = report.summary_table(rows)
    parent.log_text(table.to_csv(index=False), "summary.csv")
    parent.log_text(table.to_html(index=False), "summary.html")
    figure = report.sweep_overlay(curves, parent.client.get_run(parent.run_id).info.run_name or "sweep")
    parent.log_figure(figure, "comparison.png")
    if rows:
        print(table.to_string(index=False), flush=True)
    theory_pictures(parent, keys, runs + reused)
    return failed


def loglog_slope(xs: list[float], ys: list[float]) -> float | None:
    """The slope of log y against log x, or None with fewer than ``MIN_SLOPE_SIZES`` distinct x."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if report.plottable(y) and x > 0]
    if len({x for x, _ in points}) < MIN_SLOPE_SIZES:
        return None
    return float(np.polyfit(np.log([x for x, _ in points]), np.log([y for _, y in points]), 1)[0])


def theory_pictures(parent: Tracker, keys: list[str], runs: list[Run]) -> None:
    """For an lr sweep: final loss against lr with the OLS floor and lr_critical. For a sample-size sweep:
    w/b error against n with the fitted slope (logged as ``error_slope``; theory says -1/2). Only runs that
    FINISHED with finite values are drawn or fitted."""
    if len(keys) != 1 or keys[0] not in ("lr", "dataset.num_examples"):
        return
    key = keys[0]
    metric = "train_loss" if key == "lr" else "w_error"
    runs = sorted((r for r in runs if concluded(r, metric)), key=lambda run: float(run.data.params[key]))
    if len(runs) < 2 and key == "lr":
        return
    xs = [float(run.data.params[key]) for run in runs]
    if key == "lr":
        first = runs[0].data.metrics
        figure = report.versus(
            xs,
            {"train_loss": [run.data.metrics["train_loss"] for run in runs]},
            "lr",
            "final train_loss against lr (finished runs)",
            hlines={"OLS floor": first.get("ols_train_loss", math.nan)},
            vlines={"lr_critical": first.get("lr_critical", math.nan)},
        )
        parent.log_figure(figure, "lr_vs_loss.png")
        return
    errors = {m: [run.data.metrics.get(m, math.nan) for run in runs] for m in ("w_error", "ols_w_error")}
    slopes = {m: loglog_slope(xs, errors[m]) for m in errors}
    sgd, ols = slopes["w_error"], slopes["ols_w_error"]
    if sgd is None or ols is None:
        print(f"no error slope: it needs at least {MIN_SLOPE_SIZES} sizes that finished ({len(set(xs))} did)")
        if len(runs) < 2:
            return
        title = "w error against n (too few finished sizes for a slope)"
    else:
        parent.log_metrics({"error_slope": sgd, "ols_error_slope": ols}, step=0)
        parent.flush()
        print(f"w_error ∝ n^{sgd:.2f}, ols_w_error ∝ n^{ols:.2f} over {len(xs)} finished runs (theory: n^-0.5)")
        title = f"w error against n: SGD slope {sgd:.2f}, OLS slope {ols:.2f}"
    figure = report.versus(xs, errors, "num_examples", title)
    parent.log_figure(figure, "error_vs_n.png")
