"""What a run is called: a sweep's job after what the sweep varies, a group after all of that but the seed."""

from __future__ import annotations

import os

from lrlab.record.redact import redact

PARENT_ENV = "LRLAB_PARENT_RUN_ID"  # the sweep's parent run, for its jobs (see lrlab/sweep/callback.py)
SWEEP_KEYS_ENV = "LRLAB_SWEEP_KEYS"  # the keys the sweep varies, comma-separated, to name the jobs
GROUPS_ENV = "LRLAB_GROUP_RUNS"  # a sweep over seeds: JSON {group name: group run id}, for its jobs
REPLICATE_KEY = "seed"  # a sweep that varies it runs each configuration once per seed: replicates
# Where a run is recorded or how it is launched says nothing of what it computes: not part of its name.
NOT_IN_NAMES = ("tracking_uri", "experiment_name", "rerun", "orphan_timeout", "hydra.")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _name_after(overrides: list[str], keys: list[str] | None) -> str:
    """The overrides of ``keys`` (all of them for None), without where or how the run is recorded."""
    named = [o for o in overrides if keys is None or _key(o) in keys]
    named = [o for o in named if not _key(o).startswith(NOT_IN_NAMES)]
    return redact(" ".join(named)) or "defaults"


def job_run_name(task_overrides: list[str]) -> str:
    """A child is named after what its sweep varies (``lr=0.03``); a single run after its overrides."""
    return _name_after(task_overrides, sweep_keys() or None)


def sweep_keys() -> list[str]:
    """The keys the sweep in progress varies (empty outside a sweep)."""
    return [k for k in os.environ.get(SWEEP_KEYS_ENV, "").split(",") if k]


def group_name(job_overrides: list[str], keys: list[str]) -> str:
    """The group of a sweep's job over seeds: what the sweep varies apart from the seed (``lr=0.03``)."""
    return _name_after(job_overrides, [k for k in keys if k != REPLICATE_KEY])
