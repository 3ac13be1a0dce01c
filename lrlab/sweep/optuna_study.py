"""An optimising sweep's Optuna study: where it is stored, how it is opened, and how a trial is told what its run came
to (docs/sweeps.md#an-optimising-sweep-hydrasweeperoptuna).

- **Where.** Beside the MLflow store: for ``sqlite:///path/mlflow.db`` the RDB storage ``sqlite:///path/optuna.db``
  (``<name>-optuna.db`` beside another ``<name>.db``). A file of its own, not the MLflow file: Optuna and MLflow each
  keep their schema's version in a table ``alembic_version``, and each would read the other's. For a
  ``postgresql`` store, the same server and database, in a schema of its own (``lrlab_optuna``) for the same reason.
  ``hydra.sweeper.storage`` chooses another storage; a tracking server (``http://``) needs it.
- **Which study.** One per experiment: the study's name is the sweep's experiment name. The same command again
  continues it. It records its metric and space (study user attrs ``lrlab.metric``, ``lrlab.space``); a sweep that
  would mix another metric, direction or space into it is refused in one line.
- **A trial's outcome**, read from its MLflow run (``tell``): FINISHED is COMPLETE with the run's final ``metric``;
  FAILED because it diverged is COMPLETE with the worst value there is (``inf`` when minimising), so that the
  sampler learns to avoid it; KILLED and tagged ``lrlab.pruned`` is PRUNED; anything else (a crash, a stop, a run
  that never started) is FAIL.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lrlab.record.errors import UsageError
from lrlab.record.redact import redact_uri
from lrlab.record.store import sqlite_path
from lrlab.sweep.search import SWEEPER, Settings, Space

if TYPE_CHECKING:
    import optuna
    from mlflow.entities import Run

PG_SCHEMA = "lrlab_optuna"  # a postgresql store's study lives in this schema of the same database
SQLITE_TIMEOUT = 60.0  # seconds a writer waits for SQLite's lock: parallel jobs report to one file
METRIC_ATTR, SPACE_ATTR = "lrlab.metric", "lrlab.space"  # what the study optimises, recorded when it is made
RUN_ATTR, PARENT_ATTR = "lrlab.run_id", "lrlab.parent_run_id"  # a trial's MLflow run and its sweep's parent


def quiet_optuna() -> None:
    """No Optuna chatter on the terminal (lrlab prints each trial itself) and no warnings about experimental
    features lrlab chose."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_url(settings: Settings, tracking_uri: str) -> str:
    """Where the study lives: ``hydra.sweeper.storage``, else beside the MLflow store."""
    if settings.storage:
        return settings.storage
    path = sqlite_path(tracking_uri)
    if path is not None:
        name = "optuna.db" if path.stem == "mlflow" else f"{path.stem}-optuna.db"
        return f"sqlite:///{path.parent / name}"
    if urlsplit(tracking_uri).scheme.split("+")[0] == "postgresql":
        from sqlalchemy.engine import make_url

        url = make_url(tracking_uri).update_query_dict({"options": f"-csearch_path={PG_SCHEMA}"})
        return url.render_as_string(hide_password=False)
    raise UsageError(
        f"{SWEEPER}.storage: the study cannot live beside tracking_uri={redact_uri(tracking_uri)}, a tracking "
        f"server; give it a database: {SWEEPER}.storage=postgresql+psycopg2://user@host/db or sqlite:///path/optuna.db"
    )


def rdb_storage(url: str, create: bool) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url``; ``create``: make its tables (the sweep), else they exist (a job)."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
    elif create and urlsplit(url).scheme.split("+")[0] == "postgresql":
        _create_schema(url)
    return optuna.storages.RDBStorage(
        url, engine_kwargs=kwargs, skip_compatibility_check=not create, skip_table_creation=not create
    )


def _create_schema(url: str) -> None:
    """The postgresql schema the study lives in, made if it is not there."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    options = str(parsed.query.get("options", ""))
    if f"search_path={PG_SCHEMA}" not in options:
        return  # a storage the user chose: as it is
    engine = sqlalchemy.create_engine(parsed.difference_update_query(["options"]))
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
    finally:
        engine.dispose()


@contextmanager
def creating(url: str) -> Iterator[None]:
    """Hold a lock beside a SQLite storage while it is made: two sweeps starting at once make its tables once."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    from filelock import FileLock

    with FileLock(path.with_name(path.name + ".lock"), timeout=SQLITE_TIMEOUT):
        yield


def make_sampler(settings: Settings, batch_size: int) -> optuna.samplers.BaseSampler:
    """``hydra.sweeper.sampler``, seeded by ``hydra.sweeper.seed``. Trials asked for in a batch are sampled before any
    of them is told: TPE then counts the others as bad values (``constant_liar``), not sampling one point K times."""
    import optuna

    seed = settings.seed
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=batch_size > 1)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    assert settings.sampler == "gp", settings.sampler
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(name: str, kwargs: dict[str, Any]) -> optuna.pruners.BasePruner:
    """``hydra.sweeper.pruner`` with ``hydra.sweeper.pruner_kwargs``; a keyword the pruner refuses is one line."""
    import optuna

    kinds = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    try:
        return kinds[name](**kwargs)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{SWEEPER}.pruner_kwargs: pruner={name} refuses {kwargs}: {error}") from None


def space_record(space: Space) -> str:
    """The space as the study records it: each key's Optuna distribution."""
    from optuna.distributions import distribution_to_json

    return json.dumps({key: distribution_to_json(d) for key, d in space.distributions().items()}, sort_keys=True)


def open_study(settings: Settings, url: str, name: str, space: Space) -> optuna.Study:
    """The study ``name`` in ``url``, made if it is new; refused in one line if it optimises something else."""
    import optuna

    quiet_optuna()
    where = redact_uri(url)
    try:
        with creating(url):
            storage = rdb_storage(url, create=True)
    except Exception as error:
        raise UsageError(f"{SWEEPER}.storage: cannot open the study's storage {where}: {error}") from None
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=optuna.study.StudyDirection[settings.direction.upper()],
        sampler=make_sampler(settings, settings.batch_size),
        pruner=make_pruner(settings.pruner, settings.pruner_kwargs),
        load_if_exists=True,
    )
    recorded = space_record(space)
    attrs = study.user_attrs
    if METRIC_ATTR not in attrs:  # new: record what it optimises
        study.set_user_attr(METRIC_ATTR, settings.metric)
        study.set_user_attr(SPACE_ATTR, recorded)
        return study
    direction = study.direction.name.lower()
    new_study = f"experiment_name=<another name> starts a new study (one study per experiment, in {where})"
    if direction != settings.direction:
        raise UsageError(
            f"{SWEEPER}.direction={settings.direction}: study {name!r} was made to {direction}; {new_study}"
        )
    if attrs[METRIC_ATTR] != settings.metric:
        raise UsageError(
            f"{SWEEPER}.metric={settings.metric}: study {name!r} optimises {attrs[METRIC_ATTR]}; {new_study}"
        )
    if attrs.get(SPACE_ATTR) != recorded:
        old = ", ".join(sorted(json.loads(attrs.get(SPACE_ATTR) or "{}")))
        raise UsageError(
            f"{space.keys[0]}: study {name!r} searched another space ({old or 'none'}), not this one; {new_study}"
        )
    return study


def done(study: optuna.Study) -> int:
    """The trials that count toward ``n_trials``: COMPLETE (a diverged one too) and PRUNED."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def fail_orphans(study: optuna.Study, still_running: set[str]) -> int:
    """Fail the trials left RUNNING by a sweep that is over (its process was killed): those whose sweep's parent run
    is not in ``still_running``. Returns how many."""
    from optuna.trial import TrialState

    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(PARENT_ATTR) not in still_running:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed += 1
    return failed


def tell(study: optuna.Study, trial: optuna.Trial, run: Run | None, settings: Settings) -> optuna.trial.FrozenTrial:
    """Tell the study what ``trial``'s run came to (see the module's docstring); the trial as told."""
    from optuna.trial import TrialState

    value: float | None = None
    state = TrialState.FAIL
    if run is not None:
        trial.set_user_attr(RUN_ATTR, run.info.run_id)
        tags, status = run.data.tags, run.info.status
        final = run.data.metrics.get(settings.metric, math.nan)
        if status == "FINISHED" and not math.isnan(final):
            state, value = TrialState.COMPLETE, final
        elif status == "FAILED" and tags.get("lrlab.diverged") == "true":
            state, value = TrialState.COMPLETE, settings.worst
            trial.set_user_attr("lrlab.diverged", True)
        elif status == "KILLED" and tags.get("lrlab.pruned") == "true":
            state = TrialState.PRUNED
    return study.tell(trial, value, state=state, skip_if_finished=True)
