"""The Hydra callback that makes a sweep one thing: validated up front, one parent run, a summary.

- Before a single run or any job of a sweep starts, every job's config is composed and validated, so
  a bad value anywhere is refused before any MLflow run exists.
- A multirun creates its parent run first (which also creates or migrates the store once, before any
  worker process touches it) and hands its id to the jobs through the environment, which every local
  launcher passes on to its workers.
- When the sweep ends, the parent gets the overlay of every child's train_loss, the summary table (CSV
  and HTML), and a status; the table is printed too.
"""

from __future__ import annotations

import math
import os
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import numpy as np
from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf, open_dict

from lrlab import report
from lrlab.config import Config
from lrlab.errors import Abort, JobFailed, UsageError
from lrlab.provenance import config_hash, run_params
from lrlab.tracking import FAILED, FINISHED, KILLED, Tracker, check_store, finished_run, resolve_tracking_uri

PARENT_ENV = "LRLAB_PARENT_RUN_ID"  # the sweep's parent run, for its jobs
SWEEP_KEYS_ENV = "LRLAB_SWEEP_KEYS"  # the keys the sweep varies, comma-separated, to name the jobs


def job_config(config: DictConfig) -> DictConfig:
    """The config a job sees: the composed config without Hydra's own node."""
    job = deepcopy(config)  # keeps the structured type, so to_object builds a Config
    with open_dict(job):
        job.pop("hydra", None)
    return job


def to_config(dcfg: DictConfig) -> Config:
    """The typed, validated config (raises ``ConfigError`` or an OmegaConf validation error)."""
    cfg = OmegaConf.to_object(job_config(dcfg) if "hydra" in dcfg else dcfg)
    assert isinstance(cfg, Config)
    return cfg


@dataclass
class SweepPlan:
    jobs: list[list[str]]  # each job's overrides
    swept: list[str]  # the sweep overrides as written, e.g. ["lr=0.01,0.03,0.1"]
    keys: list[str]  # the keys they vary, e.g. ["lr"]


def plan_sweep(config: DictConfig) -> SweepPlan | None:
    """The jobs Hydra's basic sweeper will launch; None for another sweeper (it validates per job)."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(overrides, None)
    sweeps = [o for o in overrides if o.is_sweep_override()]
    return SweepPlan(
        jobs=batches[0] if batches else [],
        swept=[o.input_line or f"{o.key_or_group}=..." for o in sweeps],
        keys=[o.key_or_group for o in sweeps],
    )


def job_run_name(task_overrides: list[str]) -> str:
    """A child is named after what its sweep varies (``lr=0.03``); a single run after its overrides."""
    keys = [k for k in os.environ.get(SWEEP_KEYS_ENV, "").split(",") if k]
    if keys:
        named = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") in keys]
        return " ".join(named) or "defaults"
    return " ".join(task_overrides) or "defaults"


class LrlabCallback(Callback):
    """Registered in conf/config.yaml under ``hydra.callbacks``."""

    def __init__(self) -> None:
        self.parent: Tracker | None = None
        self.plan: SweepPlan | None = None
        self.planned: dict[str, str] = {}  # config hash -> run name, for every planned job

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            cfg = to_config(config)  # refuse bad input before the run exists
            check_store(resolve_tracking_uri(cfg.tracking_uri))
        except Exception as error:
            raise Abort(error) from error

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._start_sweep(config)
        except Exception as error:
            raise Abort(error) from error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._end_sweep()
        except Exception as error:
            raise Abort(error) from error

    def _start_sweep(self, config: DictConfig) -> None:
        self.plan = plan_sweep(config)
        os.environ[SWEEP_KEYS_ENV] = ",".join(self.plan.keys if self.plan else [])
        self.planned = {}
        if self.plan is not None:
            if not self.plan.jobs:
                raise UsageError("the sweep has no jobs: a sweep list is empty")
            for overrides in self.plan.jobs:
                job = compose(config_name="config", overrides=overrides, return_hydra_config=True)
                to_config(job)
                params = run_params(job_config(job), dict(job.hydra.runtime.choices))
                self.planned[config_hash(params)] = job_run_name(overrides)
        cfg = to_config(config)
        check_store(resolve_tracking_uri(cfg.tracking_uri))
        swept = " ".join(self.plan.swept) if self.plan else " ".join(config.hydra.overrides.task)
        self.parent = Tracker.start(
            resolve_tracking_uri(cfg.tracking_uri),
            cfg.experiment_name,
            run_name=f"sweep {swept}".strip(),
            tags={"lrlab.sweep": "true", "lrlab.overrides": " ".join(config.hydra.overrides.task)},
        )
        global _active_parent
        _active_parent = self.parent
        print(f"sweep: parent run {self.parent.run_id} in experiment {cfg.experiment_name!r}", flush=True)
        os.environ[PARENT_ENV] = self.parent.run_id

    def _end_sweep(self) -> None:
        global _active_parent
        assert self.parent is not None
        parent, self.parent, _active_parent = self.parent, None, None
        os.environ.pop(PARENT_ENV, None)
        keys = os.environ.pop(SWEEP_KEYS_ENV, "").split(",")
        failed = summarise(parent, [k for k in keys if k], self.planned)
        parent.end(FAILED if failed else FINISHED)
        if failed:
            raise JobFailed(f"{len(failed)} job(s) failed (not diverged): {', '.join(failed)}")


_active_parent: Tracker | None = None  # the parent run of the sweep in progress in this process


def end_interrupted_sweep() -> None:
    """Ctrl-C or SIGTERM during a sweep: its parent run ends KILLED (its running child ends itself)."""
    global _active_parent
    if _active_parent is not None:
        parent, _active_parent = _active_parent, None
        parent.end(KILLED)


def children(parent: Tracker) -> list[Run]:
    run = parent.client.get_run(parent.run_id)
    found = parent.client.search_runs(
        [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'", max_results=10000
    )
    return sorted(found, key=lambda r: int(r.data.tags.get("lrlab.job_num", "0")))


def outcome(run: Run) -> str:
    return "DIVERGED" if run.data.tags.get("lrlab.diverged") == "true" else run.info.status


def skipped(parent: Tracker, runs: list[Run], planned: dict[str, str]) -> list[Run]:
    """The FINISHED runs that planned jobs reused instead of running again (rerun=false)."""
    ran = {run.data.tags.get("lrlab.config_hash") for run in runs}
    experiment = parent.client.get_run(parent.run_id).info.experiment_id
    found = (finished_run(parent.client, experiment, identity) for identity in planned.keys() - ran)
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
    report.close(figure)
    print(table.drop(columns="run_id").to_string(index=False), flush=True)
    theory_pictures(parent, keys, runs + reused)
    return failed


def _loglog_slope(xs: list[float], ys: list[float]) -> float:
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if report.plottable(y)]
    return float(np.polyfit(np.log([x for x, _ in points]), np.log([y for _, y in points]), 1)[0])


def theory_pictures(parent: Tracker, keys: list[str], runs: list[Run]) -> None:
    """For an lr sweep: final loss against lr with the OLS floor and lr_critical. For a sample-size sweep:
    w/b error against n with the fitted slope (logged as ``error_slope``; theory says -1/2)."""
    if len(keys) != 1 or keys[0] not in ("lr", "dataset.num_examples") or len(runs) < 2:
        return
    key = keys[0]
    runs = sorted(runs, key=lambda run: float(run.data.params[key]))
    xs = [float(run.data.params[key]) for run in runs]
    first = runs[0].data.metrics
    if key == "lr":
        figure = report.versus(
            xs,
            {"train_loss": [run.data.metrics.get("train_loss", math.nan) for run in runs]},
            "lr",
            "final train_loss against lr",
            hlines={"OLS floor": first.get("ols_train_loss", math.nan)},
            vlines={"lr_critical": first.get("lr_critical", math.nan)},
        )
        parent.log_figure(figure, "lr_vs_loss.png")
    else:
        errors = {m: [run.data.metrics.get(m, math.nan) for run in runs] for m in ("w_error", "ols_w_error")}
        slopes = {m: _loglog_slope(xs, errors[m]) for m in errors}
        parent.log_metrics({"error_slope": slopes["w_error"], "ols_error_slope": slopes["ols_w_error"]}, step=0)
        parent.flush()
        print(f"w_error ∝ n^{slopes['w_error']:.2f}, ols_w_error ∝ n^{slopes['ols_w_error']:.2f} (theory: n^-0.5)")
        title = f"w error against n: SGD slope {slopes['w_error']:.2f}, OLS slope {slopes['ols_w_error']:.2f}"
        figure = report.versus(xs, errors, "num_examples", title)
        parent.log_figure(figure, "error_vs_n.png")
    report.close(figure)
