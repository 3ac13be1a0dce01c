"""What a job must know of its sweep: one typed object, made once by the sweep's callback (the store as an absolute
URI, the experiment, the parent run) and passed to each job. Worker processes get it from ``LRLAB_SWEEP``: the
environment is the only channel every launcher passes on to its workers. It is written and read here, nowhere else."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from lrlab.sweep.names import group_name

ENV = "LRLAB_SWEEP"  # the encoded SweepContext of the sweep in progress, for its worker processes


@dataclass(frozen=True)
class StudyRef:
    """An optimising sweep's Optuna study (``hydra/sweeper=optuna``): job ``n`` of the sweep is its trial ``n``, which
    the job reports its epochs to when there is a pruner (``lrlab/sweep/optuna_trial.py``)."""

    storage: str  # the study's RDB storage URL
    name: str  # the study's name: the sweep's experiment name
    metric: str  # what a trial is scored by; with a pruner, reported each epoch
    pruner: str = "none"  # none, median or hyperband
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepContext:
    tracking_uri: str  # the sweep's store, absolute: every job writes here
    experiment_id: str
    experiment_name: str
    parent_run_id: str
    keys: tuple[str, ...] = ()  # the keys the sweep varies, as written (``lr``, ``seed``)
    groups: dict[str, str] = field(default_factory=dict)  # a sweep over seeds: group name -> group run id
    study: StudyRef | None = None  # an optimising sweep's study, set by its sweeper before the first trial

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> SweepContext:
        fields = json.loads(text)
        study = StudyRef(**fields["study"]) if fields.get("study") else None
        return cls(**{**fields, "keys": tuple(fields["keys"]), "study": study})

    def parent_of(self, overrides: list[str]) -> str:
        """The run a job with ``overrides`` nests under: its group of seed replicates, else the sweep's parent."""
        if not self.groups:
            return self.parent_run_id
        return self.groups.get(group_name(overrides, list(self.keys)), self.parent_run_id)

    def publish(self) -> None:
        """Make this the sweep in progress, for the jobs of this process and of its workers."""
        os.environ[ENV] = self.encode()


def current() -> SweepContext | None:
    """The sweep in progress (None: a single run)."""
    text = os.environ.get(ENV)
    return SweepContext.decode(text) if text else None


def clear() -> None:
    """No sweep is in progress any more."""
    os.environ.pop(ENV, None)
