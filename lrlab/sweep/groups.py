"""Group runs of a sweep over seeds (docs/sweeps.md#seeds-as-replicates): one run per configuration, created under
the sweep's parent before any job starts, each seed's run nested under it, aggregated over the seeds that FINISHED."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Run

from lrlab.core.metrics import EPOCH_METRICS
from lrlab.core.outcome import Outcome
from lrlab.core.replicates import Spread, log_spread, per_epoch, spread
from lrlab.record.tracking import FAILED, FINISHED, GROUP_TAG, KILLED, Tracker
from lrlab.sweep.job import OUTCOME_TAG
from lrlab.sweep.names import group_name


def plan_groups(jobs: list[list[str]], keys: list[str]) -> dict[str, int]:
    """Each group of a sweep over seeds, in the sweep's order, with how many jobs (seeds) it has."""
    counts: dict[str, int] = {}
    for overrides in jobs:
        name = group_name(overrides, keys)
        counts[name] = counts.get(name, 0) + 1
    return counts


@dataclass
class Group:
    """One configuration of a sweep over seeds: its run and what its seeds did."""

    name: str
    tracker: Tracker
    planned: int  # seeds planned
    members: list[Run] = field(default_factory=list)  # its seed runs, this sweep's and reused ones
    ended: bool = False

    @property
    def finished(self) -> list[Run]:
        return [run for run in self.members if run.info.status == FINISHED and _finite(run)]

    @property
    def diverged(self) -> list[Run]:
        return [run for run in self.members if run.data.tags.get("lrlab.diverged") == "true"]

    @property
    def crashed(self) -> list[Run]:
        return [run for run in self.members if run.info.status == FAILED and run not in self.diverged]

    @property
    def outcomes(self) -> dict[str, int]:
        """How many of its seeds came to each outcome (``lrlab.core.outcome``), every outcome counted."""
        found = [outcome_of(run) for run in self.members]
        return {o.value: found.count(o.value) for o in Outcome}

    def final(self, metric: str) -> Spread:
        """The spread of a final metric over the seeds that finished."""
        return spread([run.data.metrics[metric] for run in self.finished])

    def status(self) -> str:
        """FAILED if a seed crashed, KILLED if one was stopped or never ran, else FINISHED.

        A diverged seed is an outcome, not a failure: the group still FINISHED, and says how many diverged."""
        if self.crashed:
            return FAILED
        if any(run.info.status == KILLED for run in self.members) or len(self.members) < self.planned:
            return KILLED
        return FINISHED

    def end(self, status: str) -> None:
        if not self.ended:
            self.ended = True
            self.tracker.end(status)


def outcome_of(run: Run) -> str:
    """A job's outcome: its tag ``lrlab.outcome``; for a run without it, overflow if it diverged, else ""."""
    diverged = run.data.tags.get("lrlab.diverged") == "true"
    return run.data.tags.get(OUTCOME_TAG, Outcome.overflow.value if diverged else "")


def _finite(run: Run) -> bool:
    return all(math.isfinite(run.data.metrics.get(m, math.nan)) for m in EPOCH_METRICS)


def start_groups(
    groups: dict[str, Group],
    parent: Tracker,
    uri: str,
    experiment_name: str,
    planned: dict[str, int],
    params: dict[str, dict[str, Any]],
    tags: dict[str, str],
) -> None:
    """Create one group run per configuration, nested under the sweep's parent, into ``groups`` as they start
    (so that whatever ends the sweep also ends those that exist if one of them fails to start). A group's
    params are those its seeds share: the configuration, without the seed."""
    for name, count in planned.items():
        group_tags = {**tags, GROUP_TAG: "true", "lrlab.replicates_planned": str(count)}
        tracker = Tracker.start(
            uri, experiment_name, name, group_tags, parent_run_id=parent.run_id, experiment=parent.experiment_id
        )
        groups[name] = Group(name, tracker, count)
        tracker.log_params(params.get(name, {}))


def aggregate(group: Group) -> dict[int, dict[str, float]]:
    """Log the group's statistics over its finished seeds and how many came to each outcome (``n_<outcome>``);
    return its per-epoch ``train_loss`` geometric mean and 95% interval (``log_spread``), for the overlay."""
    tracker = group.tracker
    finished = group.finished
    tracker.set_tags(
        {
            "lrlab.replicates": len(group.members),
            "lrlab.diverged_replicates": len(group.diverged),
            "lrlab.replicate_runs": " ".join(run.info.run_id for run in group.members)[:5000],
        }
    )
    if group.diverged:
        print(f"{group.name}: {len(group.diverged)} of {len(group.members)} seed(s) diverged; aggregating the rest")
    curves: dict[int, dict[str, float]] = {}
    if not finished:
        tracker.log_metrics({"n_replicates": 0, "n_diverged": len(group.diverged), **_counts(group)}, 0)
        tracker.flush()
        return curves
    histories = {
        metric: [_history(tracker, run, metric) for run in finished] for metric in EPOCH_METRICS
    }  # metric -> seeds -> epochs
    steps = sorted(set.intersection(*(set(h) for runs in histories.values() for h in runs)))
    for metric, runs in histories.items():
        mean, std = per_epoch([[h[step] for step in steps] for h in runs])
        for step, m, s in zip(steps, mean, std, strict=True):
            tracker.log_metrics({f"{metric}_mean": m, **({f"{metric}_std": s} if len(runs) > 1 else {})}, step)
            if metric == "train_loss":
                at = log_spread([h[step] for h in runs])
                curves[step] = {"mean": at.mean, "low": at.low, "high": at.high}
    once: dict[str, float] = {"n_replicates": len(finished), "n_diverged": len(group.diverged), **_counts(group)}
    for metric in EPOCH_METRICS:
        final = group.final(metric)
        if final.n > 1:
            once |= {f"{metric}_ci95_low": final.low, f"{metric}_ci95_high": final.high}
    tracker.log_metrics(once, steps[-1] if steps else 0)
    tracker.flush()
    return curves


def _counts(group: Group) -> dict[str, float]:
    return {f"n_{name}": count for name, count in group.outcomes.items()}


def _history(tracker: Tracker, run: Run, metric: str) -> dict[int, float]:
    return {m.step: m.value for m in tracker.client.get_metric_history(run.info.run_id, metric)}
