"""An optimising sweep's space and settings (lrlab/sweep/search.py), its storage and the job's side of a trial, read
through Hydra's real parser and lrlab's real config; no store, no subprocess."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from lrlab.record.errors import UsageError
from lrlab.sweep.context import StudyRef, SweepContext
from lrlab.sweep.names import job_run_name
from lrlab.sweep.optuna_study import PG_SCHEMA, storage_url
from lrlab.sweep.optuna_sweep import _consecutive
from lrlab.sweep.optuna_trial import TrialHooks, trial_hooks
from lrlab.sweep.search import Settings, parse_space, read_settings, read_space, spell

Compose = Callable[..., DictConfig]


@pytest.fixture
def config(compose_cfg: Compose) -> DictConfig:
    return compose_cfg()


def settings(**changes: Any) -> Settings:
    base = {"n_trials": 4, "direction": "minimize", "sampler": "tpe", "seed": 0, "metric": "train_loss"}
    return Settings(**{**base, "pruner": "none", **changes})


def test_a_log_interval_is_a_log_float_and_a_trial_sets_its_value(config: DictConfig) -> None:
    space = parse_space(["lr=tag(log,interval(0.001,1.9))", "num_epochs=2"], config)
    assert space.keys == ["lr"] and space.fixed == ("num_epochs=2",)
    assert space.distributions() == {"lr": FloatDistribution(0.001, 1.9, log=True)}
    overrides = space.overrides({"lr": 0.0123456789})
    assert overrides == ["num_epochs=2", "lr=0.0123456789"]
    assert job_run_name(overrides, space.keys) == "lr=0.0123456789"  # named by its values, as a grid job
    assert space.probes() == [["num_epochs=2", "lr=0.001"], ["num_epochs=2", "lr=1.9"]]  # both ends checked


def test_an_interval_over_a_whole_number_key_is_an_int(config: DictConfig) -> None:
    space = parse_space(["batch_size=interval(1,100)", "dataset.num_examples=interval(100,1000)"], config)
    assert space.distributions() == {
        "batch_size": IntDistribution(1, 100),
        "dataset.num_examples": IntDistribution(100, 1000),
    }
    assert space.overrides({"batch_size": 7, "dataset.num_examples": 250}) == [
        "batch_size=7",
        "dataset.num_examples=250",
    ]


def test_choices_ranges_and_globs(config: DictConfig) -> None:
    space = parse_space(
        ["batch_size=choice(1,10,100)", "optimizer.momentum=range(0,0.9,0.1)", "model=glob(*)", "seed=range(0,3)"],
        config,
    )
    dists = space.distributions()
    assert dists["batch_size"] == CategoricalDistribution((1, 10, 100))
    assert dists["optimizer.momentum"] == FloatDistribution(0.0, 0.8, step=0.1)  # the stop excluded, as Hydra lists
    assert dists["model"] == CategoricalDistribution(("linear", "scratch"))
    assert dists["seed"] == IntDistribution(0, 2)
    # a stepped float is spelled without its float noise (0.7000000000000001 is 0.7)
    assert space.params[1].override(0.7000000000000001) == "optimizer.momentum=0.7"
    probes = space.probes()
    assert len(probes) == 1 + 2 + 1 + 1 + 1  # all at their first value, then each other value or end in turn
    assert ["batch_size=100", "optimizer.momentum=0.0", "model=linear", "seed=0"] in probes
    assert ["batch_size=1", "optimizer.momentum=0.8", "model=linear", "seed=0"] in probes


def test_the_sweepers_params_and_the_command_line_that_wins_over_them(compose_cfg: Compose) -> None:
    params = ["hydra/sweeper=optuna", "+hydra.sweeper.params.lr='interval(0.1,0.2)'"]
    config = compose_cfg(*params, "+hydra.sweeper.params.batch_size='choice(5,10)'", return_hydra_config=True)
    assert read_space(config).distributions() == {
        "lr": FloatDistribution(0.1, 0.2),
        "batch_size": CategoricalDistribution((5, 10)),
    }
    fixed = read_space(compose_cfg(*params, "lr=0.5", return_hydra_config=True))
    assert fixed.params == () and fixed.fixed == ("lr=0.5",)  # the command line's lr fixes it
    space = parse_space(["lr=interval(0.1,0.2)", "lr=interval(0.01,0.02)"], config)
    assert space.distributions() == {"lr": FloatDistribution(0.01, 0.02)}


@pytest.mark.parametrize(
    ("argument", "says"),
    [
        ("lr=interval(2,1)", "lr: lr=interval(2,1) is empty"),
        ("lr=interval(1,1)", "lr: lr=interval(1,1) is empty"),
        ("lr=tag(log,interval(0,1))", "lr: lr=tag(log,interval(0,1)): a log interval needs a start above 0"),
        ("model=glob(zzz*)", "model: model=glob(zzz*) matches no option of model: choose among linear, scratch"),
        ("lr=glob(*)", "lr: lr=glob(*): glob() chooses among a config group's options"),
        ("lr=tag(lg,interval(0.1,1))", "lr: lr=tag(lg,interval(0.1,1)): the only tag"),
        ("lr=tag(log,choice(0.1,1))", "lr: lr=tag(log,choice(0.1,1)): log goes with an interval"),
        ("batch_size=interval(1.5,8)", "batch_size: batch_size=interval(1.5,8): batch_size holds whole numbers"),
        ("lr=range(5,1)", "lr: lr=range(5,1) has no values"),
        ("experiment_name=choice(a,b)", "experiment_name: a sweep lives in one store and one experiment"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_key(config: DictConfig, argument: str, says: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_space([argument], config)
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials=0: a whole number >= 1"),
        ({"direction": "down"}, "hydra.sweeper.direction=down is not an option: choose one of minimize, maximize"),
        ({"sampler": "grid"}, "hydra.sweeper.sampler=grid is not an option: choose one of tpe, random, cmaes, gp"),
        ({"pruner": "asha"}, "hydra.sweeper.pruner=asha is not an option: choose one of none, median, hyperband"),
        ({"metric": "loss"}, "hydra.sweeper.metric=loss: not a metric a run logs"),
        ({"pruner": "median", "metric": "train_seconds"}, "hydra.sweeper.pruner=median: a pruner hears the metric"),
        ({"batch_size": 0}, "hydra.sweeper.batch_size=0: a whole number >= 1"),
        ({"seed": -1}, "hydra.sweeper.seed=-1: a whole number >= 0"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(compose_cfg: Compose, changes: dict[str, Any], says: str) -> None:
    config = compose_cfg("hydra/sweeper=optuna", return_hydra_config=True)
    sweeper = OmegaConf.merge(config.hydra.sweeper, changes)
    with pytest.raises(UsageError, match="^" + says.replace("(", r"\(").replace(")", r"\)")):
        read_settings(sweeper, config)  # type: ignore[arg-type]


def test_the_settings_and_their_defaults(compose_cfg: Compose) -> None:
    config = compose_cfg("hydra/sweeper=optuna", "launcher=joblib", "hydra.launcher.n_jobs=3", return_hydra_config=True)
    read = read_settings(config.hydra.sweeper, config)
    assert (read.n_trials, read.direction, read.sampler, read.metric, read.pruner) == (
        20,
        "minimize",
        "tpe",
        "train_loss",
        "none",
    )
    assert read.batch_size == 3 and read.storage is None and read.worst == math.inf  # joblib: n_jobs at a time
    vectorized = compose_cfg("hydra/sweeper=optuna", "launcher=vectorized", return_hydra_config=True)
    assert read_settings(vectorized.hydra.sweeper, vectorized).batch_size == 8
    basic = compose_cfg("hydra/sweeper=optuna", "hydra.sweeper.direction=maximize", return_hydra_config=True)
    assert read_settings(basic.hydra.sweeper, basic).batch_size == 1
    assert read_settings(basic.hydra.sweeper, basic).worst == -math.inf  # a diverged trial, when maximising


def test_the_study_lives_beside_the_store() -> None:
    assert storage_url(settings(), "sqlite:////data/mlflow.db") == "sqlite:////data/optuna.db"
    assert storage_url(settings(), "sqlite:////data/runs.db") == "sqlite:////data/runs-optuna.db"
    pg = storage_url(settings(), "postgresql+psycopg2://lab:secret@db:5432/mlflow")
    assert pg.startswith("postgresql+psycopg2://lab:secret@db:5432/mlflow?") and f"search_path%3D{PG_SCHEMA}" in pg
    chosen = settings(storage="sqlite:////elsewhere/study.db")
    assert storage_url(chosen, "http://tracker:5000") == "sqlite:////elsewhere/study.db"
    with pytest.raises(UsageError, match=r"^hydra.sweeper.storage: the study cannot live beside tracking_uri=http"):
        storage_url(settings(), "http://lab:secret@tracker:5000")


def test_the_sweep_context_carries_the_study_to_workers() -> None:
    study = StudyRef("sqlite:////d/optuna.db", "lrlab", "train_loss", "median", {"n_startup_trials": 2})
    sweep = SweepContext("sqlite:////d/mlflow.db", "1", "lrlab", "abc", ("lr",), study=study)
    assert SweepContext.decode(sweep.encode()) == sweep
    plain = SweepContext("sqlite:////d/mlflow.db", "1", "lrlab", "abc", ("lr",))
    assert SweepContext.decode(plain.encode()) == plain and plain.study is None


def test_a_job_without_a_pruner_does_not_touch_optuna() -> None:
    sweep = SweepContext("sqlite:////d/mlflow.db", "1", "lrlab", "abc", ("lr",))
    no_pruner = SweepContext(
        "sqlite:////d/mlflow.db", "1", "lrlab", "abc", ("lr",), study=StudyRef("sqlite:////nowhere.db", "x", "m")
    )

    def on_epoch(_: object) -> None:
        return None

    def stop() -> bool:
        return False

    for context in (None, sweep, no_pruner):
        hooks = trial_hooks(context, 3, on_epoch, stop)
        assert isinstance(hooks, TrialHooks) and hooks.on_epoch is on_epoch and hooks.should_stop is stop
        error = RuntimeError("x")
        assert hooks.outcome(error) is error


def test_a_batch_launches_as_runs_of_consecutive_trial_numbers() -> None:
    class Asked:
        def __init__(self, number: int) -> None:
            self.number = number

    batch = [Asked(n) for n in (4, 5, 6, 9, 10)]
    runs = _consecutive(batch)  # type: ignore[arg-type]
    assert [(first, [t.number for t in trials]) for first, trials in runs] == [(4, [4, 5, 6]), (9, [9, 10])]


def test_values_are_spelled_as_hydra_reads_them() -> None:
    assert [spell(True), spell(0.1), spell(3), spell("linear")] == ["true", "0.1", "3", "linear"]


def test_the_search_modules_leave_optuna_to_the_sweep() -> None:
    """The callback imports search.py for every command: no Optuna until an optimising sweep runs."""
    import subprocess

    code = "import lrlab.sweep.callback, lrlab.sweep.job, sys; print('optuna' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_callback_refuses_bad_input_without_importing_torch() -> None:
    """Every command loads the callback, and bad input ends there: torch (about 1 s) waits for a job to train."""
    import subprocess

    code = "import lrlab.sweep.callback, sys; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
