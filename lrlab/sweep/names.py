"""What a run is called: a sweep's job after what the sweep varies, a group after all of that but the seed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lrlab.record.redact import redact

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


def job_run_name(task_overrides: list[str], keys: Sequence[str] | None) -> str:
    """A sweep's job is named after what its sweep varies (``lr=0.03``, ``keys``); a single run, or a sweep that
    varies nothing, after its overrides."""
    return _name_after(task_overrides, list(keys) if keys else None)


def group_name(job_overrides: list[str], keys: list[str]) -> str:
    """The group of a sweep's job over seeds: what the sweep varies apart from the seed (``lr=0.03``)."""
    return _name_after(job_overrides, [k for k in keys if k != REPLICATE_KEY])


@dataclass(frozen=True)
class Planned:
    """One job of a sweep, as planned before it runs."""

    name: str  # its run's name: what the sweep varies (``lr=0.03 seed=1``)
    identity: str  # its config hash: a FINISHED run of it may stand in for it (rerun=false)
    group: str | None = None  # in a sweep over seeds, its group: what it is apart from its seed
