"""``hydra/sweeper=optuna``: an optimising sweep on Optuna's ask-and-tell interface
(docs/sweeps.md#an-optimising-sweep-hydrasweeperoptuna).

The sweep's callback has checked the space and started the parent run (``lrlab/sweep/callback.py``). Here: open the
study (``optuna_study.py``), put it in the sweep's context so that each job finds its trial, then until the study
has ``n_trials`` trials done: ask for a batch (``hydra.sweeper.batch_size``: one trial at a time with the basic
launcher, ``n_jobs`` with joblib, 8 with the vectorized launcher), launch it as one call, with trial ``n`` as job
``n``, and tell each trial what its MLflow run came to. Every trial asked for is told, whatever stops the sweep: a
trial interrupted is FAIL. The parent records the best as it improves and, at the end, the study's figures
(``optuna_report.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig

from lrlab.core.progress import bar
from lrlab.record.redact import redact_uri
from lrlab.record.store import open_client
from lrlab.sweep import context, interrupt
from lrlab.sweep.context import StudyRef, SweepContext
from lrlab.sweep.names import job_run_name
from lrlab.sweep.optuna_report import BestRecord, draw
from lrlab.sweep.optuna_study import PARENT_ATTR, done, fail_orphans, open_study, storage_url, tell
from lrlab.sweep.search import SearchPlan, plan_search

if TYPE_CHECKING:
    import optuna
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def run_sweep(launcher: Launcher, config: DictConfig) -> list[Sequence[JobReturn]]:
    """Run the study's trials still to do; the launcher's returns, one list per launch."""
    sweep = context.current()
    plan = plan_search(config)
    assert sweep is not None and plan is not None, "the sweep's callback starts the parent run first"
    settings, space = plan.settings, plan.space
    url = storage_url(settings, sweep.tracking_uri)
    study = open_study(settings, url, sweep.experiment_name, space)
    client = open_client(sweep.tracking_uri, create=False)
    orphans = _fail_orphans(study, client)
    study_ref = StudyRef(url, sweep.experiment_name, settings.metric, settings.pruner, settings.pruner_kwargs)
    sweep = replace(sweep, study=study_ref)
    sweep.publish()  # from here on, each job finds its trial: job n is trial n
    _describe(client, sweep, plan, url)
    best = BestRecord(client, sweep.parent_run_id, settings.metric, settings.direction)
    best.update(study)  # a resumed study's best so far
    to_do = settings.n_trials - done(study)
    print(
        f"sweep: study {study.study_name!r} in {redact_uri(url)}: {done(study)} of {settings.n_trials} trial(s) done"
        + (f" ({orphans} left RUNNING by a sweep that is over, now FAIL)" if orphans else "")
        + (f"; {to_do} to run, {settings.batch_size} at a time" if to_do > 0 else "; nothing to run")
        + (" (raise hydra.sweeper.n_trials to go on)" if to_do <= 0 else ""),
        flush=True,
    )
    returns: list[Sequence[JobReturn]] = []
    with bar(max(to_do, 0), "trials", "trial", above=True) as progress:  # on a terminal; lines print above it
        while to_do > 0 and not interrupt.stop_requested():
            batch = [study.ask(space.distributions()) for _ in range(min(settings.batch_size, to_do))]
            launched: list[Sequence[JobReturn]] = []
            try:
                for trial in batch:
                    trial.set_user_attr(PARENT_ATTR, sweep.parent_run_id)
                for first, trials in _consecutive(batch):
                    jobs = [space.overrides(trial.params) for trial in trials]
                    launched.append(launcher.launch(jobs, initial_job_idx=first))
            finally:  # told on every path: an interrupted trial is FAIL, as its run is KILLED
                with interrupt.deferred():
                    _tell_all(study, batch, client, sweep, plan)
            returns += launched
            to_do -= len(batch)
            progress.update(len(batch))
            best.update(study)
            for ret in (ret for rets in launched for ret in rets):
                _ = ret.return_value  # a job that raised raises here, as with Hydra's basic sweeper
    if not interrupt.stop_requested():
        best.final()
        draw(study, client, sweep.parent_run_id, settings.metric)
    return returns


def _consecutive(batch: list[optuna.Trial]) -> list[tuple[int, list[optuna.Trial]]]:
    """The batch as runs of consecutive trial numbers, each launched from its first: job n is trial n. A batch is
    one run unless another sweep asked for trials of the same study in between."""
    runs: list[tuple[int, list[optuna.Trial]]] = []
    for trial in batch:
        if runs and runs[-1][0] + len(runs[-1][1]) == trial.number:
            runs[-1][1].append(trial)
        else:
            runs.append((trial.number, [trial]))
    return runs


def _tell_all(
    study: optuna.Study, batch: list[optuna.Trial], client: MlflowClient, sweep: SweepContext, plan: SearchPlan
) -> None:
    """Tell each trial of ``batch`` what its run came to, and print it."""
    from optuna.trial import TrialState

    for trial in batch:
        try:
            run = _run_of(client, sweep, trial.number)
        except Exception:  # the store is gone: the trial is FAIL, the launcher's error is what the user reads
            run = None
        name = job_run_name(plan.space.overrides(trial.params), plan.keys)
        try:
            told = tell(study, trial, run, plan.settings)
        except Exception as error:  # told FAIL if it can be: what stopped the sweep is what the user reads
            with contextlib.suppress(Exception):
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            print(f"trial {trial.number} ({name}): FAIL ({type(error).__name__}: {error})", flush=True)
            continue
        state = told.state.name
        if state == "COMPLETE" and told.user_attrs.get("lrlab.diverged"):
            state += f" (diverged: {plan.settings.metric} {told.value})"
        elif state == "COMPLETE":
            state += f", {plan.settings.metric} {told.value:.6g}"
        elif state == "PRUNED":
            state += f" after epoch {told.last_step}"
        print(f"trial {trial.number} ({name}): {state}", flush=True)


def _run_of(client: MlflowClient, sweep: SweepContext, number: int) -> Run | None:
    """The MLflow run of trial ``number``: the sweep's job ``number``."""
    found = client.search_runs(
        [sweep.experiment_id],
        f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}' and tags.`lrlab.job_num` = '{number}'",
        max_results=1,
    )
    return found[0] if found else None


def _fail_orphans(study: optuna.Study, client: MlflowClient) -> int:
    """Fail the trials a sweep left RUNNING when its process was killed: those whose parent run is over (lrlab ends
    a dead sweep's runs KILLED as orphans, ``lrlab/record/orphans.py``)."""
    from optuna.trial import TrialState

    parents = {
        str(t.user_attrs.get(PARENT_ATTR, "")) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    }
    running = set()
    for parent in parents - {""}:
        try:
            if client.get_run(parent).info.status == "RUNNING":
                running.add(parent)
        except Exception:  # a parent that is gone is over
            continue
    return fail_orphans(study, running)


def _describe(client: MlflowClient, sweep: SweepContext, plan: SearchPlan, url: str) -> None:
    """The parent's tags of what it searches."""
    settings = plan.settings
    tags: dict[str, Any] = {
        "lrlab.sweeper": "optuna",
        "lrlab.study": sweep.experiment_name,
        "lrlab.study_storage": redact_uri(url),
        "lrlab.search": " ".join(plan.swept),
        "lrlab.search.metric": settings.metric,
        "lrlab.search.direction": settings.direction,
        "lrlab.search.sampler": settings.sampler,
        "lrlab.search.seed": settings.seed,
        "lrlab.search.pruner": settings.pruner,
        "lrlab.search.n_trials": settings.n_trials,
    }
    for key, value in tags.items():
        client.set_tag(sweep.parent_run_id, key, str(value), synchronous=True)
