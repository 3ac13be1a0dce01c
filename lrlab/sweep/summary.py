"""A sweep's summary, read back from MLflow: the table of its jobs, the overlay, and theory pictures.

Conclusions come only from runs that FINISHED with finite values: a diverged or killed run is listed in
the table with its status, but it is not a point of a fitted slope or a theory picture.

A sweep over seeds reads by group (lrlab/sweep/groups.py): one row per configuration with the mean, std and 95%
t interval of each final metric over its finished seeds, each group's geometric mean curve with its 95% interval on
the log scale as a band, and the theory pictures through the group means. Every job's outcome (its tag
``lrlab.outcome``: overflow, growing, above_floor, at_floor, bounded) is a column of the table, a line style of the
overlay, and counted per group.
"""

from __future__ import annotations

import math

import numpy as np
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from lrlab.core.outcome import UNBOUNDED
from lrlab.core.replicates import fit_slope, log_spread, slope_interval
from lrlab.record.keys import shorten
from lrlab.record.provenance import code_tags
from lrlab.record.tracking import FAILED, FINISHED, KILLED, Tracker, finished_run, outcome, sweep_jobs
from lrlab.sweep import report
from lrlab.sweep.groups import Group, aggregate, outcome_of
from lrlab.sweep.names import REPLICATE_KEY, Planned

MIN_SLOPE_SIZES = 3  # a slope through fewer distinct sizes confirms nothing


def children(parent: Tracker) -> list[Run]:
    """The sweep's job runs (under its groups, in a sweep over seeds), in job order."""
    return sweep_jobs(parent.client, parent.experiment_id, parent.run_id)


def pruned(run: Run) -> bool:
    """Whether an optimising sweep's pruner stopped the run (KILLED, tagged ``lrlab.pruned``): not a failure."""
    return run.data.tags.get("lrlab.pruned") == "true"


def concluded(run: Run, metric: str) -> bool:
    """Whether a run may carry a conclusion about ``metric``: FINISHED, with a finite value of it."""
    value = run.data.metrics.get(metric, math.nan)
    return run.info.status == FINISHED and math.isfinite(value) and abs(value) < 1e300


def skipped(parent: Tracker, runs: list[Run], planned: list[Planned]) -> list[tuple[Planned, Run]]:
    """Each planned job that this sweep did not run, with the FINISHED run it reused instead (rerun=false)."""
    ran = {run.info.run_name for run in runs}
    missing = [job for job in planned if shorten(job.name) not in ran]
    digest = code_tags()["lrlab.code_digest"]  # a job reuses only a run of this code
    found = [(job, finished_run(parent.client, parent.experiment_id, job.identity, digest)) for job in missing]
    return [(job, run) for job, run in found if run is not None]


def summarise(
    parent: Tracker, keys: list[str], planned: list[Planned], groups: dict[str, Group] | None = None
) -> list[str]:
    """Log the overlay and the summary table on the parent, print the table; return the failed jobs."""
    runs = children(parent)
    reused = skipped(parent, runs, planned)
    if groups:
        return _summarise_groups(parent, keys, runs, reused, groups)
    rows, curves, failed = [], {}, []
    for name, run in [(str(run.info.run_name), run) for run in runs] + [(job.name, run) for job, run in reused]:
        final = run.data.metrics
        rows.append(
            {
                "run": name,
                **{key: run.data.params.get(key, "") for key in keys},
                "train_loss": final.get("train_loss"),
                "w_error": final.get("w_error"),
                "b_error": final.get("b_error"),
                "train_seconds": final.get("train_seconds"),
                "outcome": outcome_of(run),
                "status": "SKIPPED" if run not in runs else "PRUNED" if pruned(run) else outcome(run),
                "run_id": run.info.run_id,
            }
        )
        history = parent.client.get_metric_history(run.info.run_id, "train_loss")
        curves[name] = [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]
        if outcome(run) in (FAILED, KILLED) and not pruned(run):
            failed.append(name)
    order = [job.name for job in planned]
    rows.sort(key=lambda row: order.index(str(row["run"])) if row["run"] in order else len(order))
    table = report.summary_table(rows)
    parent.log_text(table.to_csv(index=False), "summary.csv")
    parent.log_text(table.to_html(index=False), "summary.html")
    title = parent.client.get_run(parent.run_id).info.run_name or "sweep"
    outcomes = {str(row["run"]): str(row["outcome"]) for row in rows}
    figure = report.sweep_overlay(curves, title, outcomes, *_numeric(keys, {str(r["run"]): r for r in rows}))
    parent.log_figure(figure, "comparison.png")
    if rows:
        print(table.to_string(index=False), flush=True)
    theory_pictures(parent, keys, runs + [run for _, run in reused])
    return failed


def _numeric(keys: list[str], params: dict[str, dict[str, object]]) -> tuple[dict[str, float] | None, str]:
    """The value of the one swept key for each name, where there is one key and every value is a number (the
    overlay then colours by it); else None."""
    if len(keys) != 1:
        return None, ""
    try:
        return {name: float(str(p.get(keys[0], ""))) for name, p in params.items()}, keys[0]
    except ValueError:
        return None, ""


def loglog_slope(xs: list[float], ys: list[float]) -> float | None:
    """The slope of log y against log x, or None with fewer than ``MIN_SLOPE_SIZES`` distinct x."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if report.plottable(y) and x > 0]
    if len({x for x, _ in points}) < MIN_SLOPE_SIZES:
        return None
    return fit_slope([x for x, _ in points], [y for _, y in points])


def theory_pictures(parent: Tracker, keys: list[str], runs: list[Run]) -> None:
    """For an lr sweep: final loss against lr with the OLS floor and lr_critical_gd. For a sample-size sweep:
    w/b error against n with the fitted slope (logged as ``error_slope``; theory says -1/2). Only runs that
    FINISHED with finite values are drawn or fitted."""
    if len(keys) != 1 or keys[0] not in ("lr", "dataset.num_examples"):
        return
    key = keys[0]
    metric = "train_loss" if key == "lr" else "w_error"
    marks = {o: [float(r.data.params[key]) for r in runs if outcome_of(r) == o] for o in UNBOUNDED}
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
            vlines={"lr_critical_gd": first.get("lr_critical_gd", math.nan)},
            marks=marks,
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


FINAL = ("train_loss", "w_error", "b_error")  # the final metrics a summary shows


def _summarise_groups(
    parent: Tracker,
    keys: list[str],
    runs: list[Run],
    reused: list[tuple[Planned, Run]],
    groups: dict[str, Group],
) -> list[str]:
    """The summary of a sweep over seeds: aggregate each group, then one row and one band per group. A seed run
    of this sweep is a member of the group it is nested under; a reused run, of its planned job's group."""
    by_id = {group.tracker.run_id: group for group in groups.values()}
    for run in runs:
        group = by_id.get(run.data.tags.get(MLFLOW_PARENT_RUN_ID, ""))
        if group is not None:
            group.members.append(run)
    for job, run in reused:
        if job.group in groups:
            groups[job.group].members.append(run)
    varied = [key for key in keys if key != REPLICATE_KEY]
    rows: list[dict[str, object]] = []
    printed: list[dict[str, object]] = []
    bands, failed = {}, []
    for group in groups.values():
        bands[group.name] = aggregate(group)
        status = group.status()
        group.end(status)
        failed += [str(r.info.run_name or r.info.run_id) for r in group.crashed]
        values = {key: _shared_param(group.members, key) for key in varied}
        stats = {metric: group.final(metric) for metric in FINAL}
        outcome_text = status if not group.diverged else f"{status}, {len(group.diverged)} diverged"
        counts = ", ".join(f"{count} {name}" for name, count in group.outcomes.items() if count)
        common: dict[str, object] = {"group": group.name, **values, "n": len(group.finished)}
        common["diverged"] = len(group.diverged)
        rows.append(
            {
                **common,
                **{
                    f"{metric}_{part}": getattr(stats[metric], attr)
                    for metric in FINAL
                    for part, attr in (("mean", "mean"), ("std", "std"), ("ci95_low", "low"), ("ci95_high", "high"))
                },
                "outcomes": counts,
                "status": status,
                "run_id": group.tracker.run_id,
            }
        )
        printed.append(
            {
                **common,
                **{m: stats[m].text() for m in FINAL},
                "outcomes": counts,
                "status": outcome_text,
                "run_id": group.tracker.run_id,
            }
        )
    table = report.summary_table(rows)
    parent.log_text(table.to_csv(index=False), "summary.csv")
    parent.log_text(table.to_html(index=False), "summary.html")
    title = parent.client.get_run(parent.run_id).info.run_name or "sweep"
    swept, key = _numeric(varied, {g.name: {k: _shared_param(g.members, k) for k in varied} for g in groups.values()})
    outcomes = {g.name: g.outcomes for g in groups.values()}
    parent.log_figure(report.group_overlay(bands, title, outcomes, swept, key), "comparison.png")
    print("mean ± std [95% t interval] over the seeds that finished, by group:", flush=True)
    print(report.summary_table(printed).to_string(index=False), flush=True)
    _group_theory(parent, varied, list(groups.values()))
    return failed


def _shared_param(runs: list[Run], key: str) -> str:
    values = {run.data.params.get(key, "") for run in runs}
    return values.pop() if len(values) == 1 else ""


def _group_theory(parent: Tracker, varied: list[str], groups: list[Group]) -> None:
    """Theory through group means: lr against final loss with where divergence begins; the error slope
    against n with a bootstrap interval over the seeds."""
    if len(varied) != 1 or varied[0] not in ("lr", "dataset.num_examples"):
        return
    key = varied[0]
    located = sorted(
        (g for g in groups if _shared_param(g.members, key)), key=lambda g: float(_shared_param(g.members, key))
    )
    if key == "lr":
        _divergence_onset(parent, located)
        return
    sized = [g for g in located if g.finished]
    xs = [float(_shared_param(g.members, key)) for g in sized]
    if len(set(xs)) < MIN_SLOPE_SIZES:
        print(f"no error slope: it needs at least {MIN_SLOPE_SIZES} sizes with a finished seed ({len(set(xs))} had)")
        return
    errors = {m: [[r.data.metrics[m] for r in g.finished] for g in sized] for m in ("w_error", "ols_w_error")}
    if any(not report.plottable(v) for values in errors.values() for seeds in values for v in seeds):
        print("no error slope: an error of 0 cannot be drawn on a log scale")
        return
    slope, low, high = slope_interval(xs, errors["w_error"])
    ols, ols_low, ols_high = slope_interval(xs, errors["ols_w_error"])
    parent.log_metrics(
        {
            "error_slope": slope,
            "error_slope_ci95_low": low,
            "error_slope_ci95_high": high,
            "ols_error_slope": ols,
            "ols_error_slope_ci95_low": ols_low,
            "ols_error_slope_ci95_high": ols_high,
        },
        step=0,
    )
    parent.flush()
    inside = "inside" if low <= -0.5 <= high else "outside"
    seeds = sorted({len(g.finished) for g in sized})
    print(
        f"w_error ∝ n^{slope:.2f}, 95% bootstrap interval [{low:.2f}, {high:.2f}] through the group means "
        f"({'/'.join(map(str, seeds))} seeds per size); theory's -0.5 lies {inside} it. "
        f"ols_w_error: n^{ols:.2f} [{ols_low:.2f}, {ols_high:.2f}]",
        flush=True,
    )
    means = {m: [log_spread(seeds) for seeds in values] for m, values in errors.items()}
    figure = report.versus_bands(
        xs, means, "num_examples", f"w error against n: slope {slope:.2f} [{low:.2f}, {high:.2f}] (theory -0.5)"
    )
    parent.log_figure(figure, "error_vs_n.png")


def _divergence_onset(parent: Tracker, groups: list[Group]) -> None:
    """Print and log, across seeds, the fraction that diverged at each lr, against lr_critical_gd."""
    if not groups:
        return
    lrs = [float(_shared_param(g.members, "lr")) for g in groups]
    fractions = [len(g.diverged) / max(1, len(g.members)) for g in groups]
    criticals = [
        r.data.metrics["lr_critical_gd"] for g in groups for r in g.members if "lr_critical_gd" in r.data.metrics
    ]
    critical = float(np.median(criticals)) if criticals else math.nan  # each seed draws its own data
    onset = next((lr for lr, f in zip(lrs, fractions, strict=True) if f > 0), None)
    stable = [lr for lr, f in zip(lrs, fractions, strict=True) if f == 0]
    metrics = {"lr_critical_gd": critical}
    if onset is not None:
        metrics["divergence_onset_lr"] = onset
    if stable:
        metrics["largest_stable_lr"] = max(stable)
    parent.log_metrics(metrics, step=0)
    parent.flush()
    counts = ", ".join(f"lr={lr:g}: {len(g.diverged)}/{len(g.members)}" for lr, g in zip(lrs, groups, strict=True))
    where = f"divergence begins at lr={onset:g}" if onset is not None else "no lr diverged"
    across = f", {min(criticals):.3g}–{max(criticals):.3g} across seeds" if criticals else ""
    print(f"{where} (lr_critical_gd = {critical:.3g}{across}); seeds diverged per lr: {counts}", flush=True)
    finished = [
        (lr, log_spread([r.data.metrics["train_loss"] for r in g.finished]))
        for lr, g in zip(lrs, groups, strict=True)
        if g.finished
    ]
    marks = {o: [lr for lr, g in zip(lrs, groups, strict=True) if g.outcomes.get(o)] for o in UNBOUNDED}
    if len(finished) >= 2:
        figure = report.versus_bands(
            [lr for lr, _ in finished],
            {"train_loss": [s for _, s in finished]},
            "lr",
            "final train_loss against lr: geometric mean and 95% interval over finished seeds",
            vlines={"lr_critical_gd (median over seeds)": critical},
            marks=marks,
        )
        parent.log_figure(figure, "lr_vs_loss.png")
