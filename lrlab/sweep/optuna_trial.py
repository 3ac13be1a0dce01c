"""A job's side of an optimising sweep with a pruner: it reports its metric each epoch to its Optuna trial and stops
training when the pruner says so.

A job finds its trial from the sweep's context (``SweepContext.study``: the storage, the study, the metric, the
pruner) and its own job number: the Optuna sweeper launches trial ``n`` as job ``n`` (``hydra.job.num``). The job
talks to the trial through the study's storage, so it works the same in the sweep's process (``launcher=basic``)
and in a worker (``joblib``, Ray). Training hears the pruner through the pipeline's ``should_stop``, asked before
every step: a pruned trial stops at the start of its next epoch, its run ends KILLED with the epochs it ran,
tagged ``lrlab.pruned`` (``Pruned``, recorded by ``lrlab/sweep/job.py``). Without a pruner nothing here runs, and a
job does not import Optuna.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lrlab.core.engines.results import EpochResult, Stopped
from lrlab.sweep.context import SweepContext

if TYPE_CHECKING:
    import optuna


class Pruned(RuntimeError):
    """The pruner stopped this trial after ``epoch``: an outcome of the search, not a failure."""

    def __init__(self, epoch: int, history: list[EpochResult]) -> None:
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch, self.history = epoch, history


@dataclass
class TrialHooks:
    """What training reports to (``on_epoch``) and asks (``should_stop``), and what its outcome then means."""

    on_epoch: Callable[[EpochResult], None]
    should_stop: Callable[[], bool]
    outcome: Callable[[BaseException], BaseException] = lambda error: error
    close: Callable[[], None] = lambda: None


def trial_hooks(
    sweep: SweepContext | None,
    job_num: int | None,
    on_epoch: Callable[[EpochResult], None],
    should_stop: Callable[[], bool],
) -> TrialHooks:
    """``on_epoch`` and ``should_stop`` as given, or, for a trial of a study with a pruner, wrapped so that each epoch
    is reported and a prune stops training (the outcome is then ``Pruned``, unless a stop was asked for too)."""
    study = sweep.study if sweep else None
    if study is None or study.pruner == "none" or job_num is None:
        return TrialHooks(on_epoch, should_stop)
    trial, storage = _trial(study.storage, study.name, study.pruner, study.pruner_kwargs, job_num)
    pruned: list[int] = []  # the epoch after which the pruner said stop

    def report(result: EpochResult) -> None:
        on_epoch(result)  # recorded (and printed) first
        value = float(getattr(result, study.metric))
        trial.report(value, result.epoch)
        if not pruned and trial.should_prune():
            pruned.append(result.epoch)

    def outcome(error: BaseException) -> BaseException:
        if isinstance(error, Stopped) and pruned and not should_stop():
            return Pruned(pruned[0], error.history)
        return error

    def close() -> None:  # a sweep of many trials in one process opens one storage per trial
        storage.remove_session()
        storage.engine.dispose()

    return TrialHooks(report, lambda: should_stop() or bool(pruned), outcome, close)


def _trial(
    storage_url: str, name: str, pruner: str, pruner_kwargs: dict[str, Any], number: int
) -> tuple[optuna.Trial, optuna.storages.RDBStorage]:
    """Trial ``number`` of the study, as a live trial that reports and asks the pruner, and its storage."""
    import optuna

    from lrlab.sweep.optuna_study import make_pruner, quiet_optuna, rdb_storage

    quiet_optuna()
    storage = rdb_storage(storage_url, create=False)
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        pruner=make_pruner(pruner, pruner_kwargs),
        sampler=optuna.samplers.RandomSampler(),  # a job samples nothing: the cheapest sampler to make
    )
    study_id = storage.get_study_id_from_name(name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number)), storage
