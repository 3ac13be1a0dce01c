"""An optimising sweep's search (``hydra/sweeper=optuna``, docs/sweeps.md#an-optimising-sweep-hydrasweeperoptuna):
its space, parsed from Hydra overrides, and its settings, each checked in one line that names the key.

The space is written as Hydra overrides, in ``hydra.sweeper.params`` or on the command line, and read with Hydra's
own ``OverridesParser``, as Hydra's Optuna sweeper reads them:

- ``lr=interval(0.001,1.9)``: a float between the two (an int for a key that holds whole numbers);
  ``tag(log,interval(...))`` samples it on a log scale;
- ``batch_size=choice(1,10,100)``, ``model=choice(scratch,linear)``, ``model=glob(*)``: one of the values;
- ``optimizer.momentum=range(0,0.9,0.1)``: one of the values Hydra's basic sweeper would list (the stop excluded),
  ordered, for the sampler a stepped float (or int);
- any other override fixes its key for every trial.

Before the sweep's parent run exists, the sweep's callback composes and validates a few probe jobs: every value of
each choice, both ends of each interval and range, the others at their first value. So a key the schema lacks or a
value it refuses is refused as in a grid sweep, naming the key, before any run. No Optuna here: the callback imports
this module for every command; ``distribution`` imports Optuna when a trial is asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, Override, RangeSweep, Transformer
from omegaconf import DictConfig, OmegaConf

from lrlab.core.metrics import AVERAGED_METRICS, EPOCH_METRICS
from lrlab.record.errors import UsageError
from lrlab.record.redact import redact
from lrlab.sweep.compose import is_group, options, task_overrides

SWEEPER = "hydra.sweeper"  # where the settings live, as the user writes them
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("none", "median", "hyperband")
# What a run logs once it ends, besides each epoch's metrics (lrlab/sweep/job.py): what a trial may be scored by.
RUN_METRICS = ("measured_excess_loss", "excess_loss_ratio", "train_seconds", "samples_per_second")
EPOCH_SCORES = EPOCH_METRICS + AVERAGED_METRICS  # a pruner hears these each epoch
NOT_SEARCHED = ("tracking_uri", "experiment_name")  # where a sweep is recorded: one store, one study
MAX_PROBES = 1000  # the probe jobs composed before the parent run: each choice value, each end
DEFAULT_BATCH = {"joblib": 0, "vectorized": 8}  # 0: the launcher's n_jobs


@dataclass(frozen=True)
class Param:
    """One searched key: a float or int range (``low``..``high``, ``step``, ``log``) or a choice of ``choices``."""

    key: str  # as written, without +/~ (``lr``, ``optimizer.momentum``)
    written: str  # the override as written, for the parent's name (``lr=tag(log,interval(0.001,1.9))``)
    kind: str  # "float", "int" or "choice"
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    prefix: str = ""  # "+" for a key added with +key=...

    def ends(self) -> list[Any]:
        """The values a probe composes: each choice, or both ends."""
        if self.kind == "choice":
            return list(self.choices)
        return [self.spell_number(self.low), self.spell_number(self.high)]

    def spell_number(self, value: float) -> int | float:
        return round(value) if self.kind == "int" else _tidy(value, self.step)

    def override(self, value: Any) -> str:
        """The job override that sets this key to ``value`` (as Optuna suggested it)."""
        if self.kind != "choice":
            value = self.spell_number(float(value))
        return f"{self.prefix}{self.key}={spell(value)}"

    def distribution(self) -> Any:
        """Optuna's distribution of this key."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Space:
    """What a trial varies (``params``, in the order written) and what it fixes (``fixed``: overrides as written)."""

    params: tuple[Param, ...]
    fixed: tuple[str, ...]

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """One trial's job overrides: the fixed ones as written, then each searched key at its value."""
        return [*self.fixed, *(p.override(values[p.key]) for p in self.params)]

    def probes(self) -> list[list[str]]:
        """The jobs that check the space before any run: every key at its first value, then each other value of
        each key in turn (the others at their first)."""
        first = {p.key: p.ends()[0] for p in self.params}
        jobs = [self._job(first)]
        for param in self.params:
            for value in param.ends()[1:]:
                jobs.append(self._job({**first, param.key: value}))
        if len(jobs) > MAX_PROBES:
            raise UsageError(f"{self.params[0].key}: the space has more than {MAX_PROBES} values to check")
        return jobs

    def _job(self, values: dict[str, Any]) -> list[str]:
        return [*self.fixed, *(p.override(values[p.key]) for p in self.params)]

    def distributions(self) -> dict[str, Any]:
        return {p.key: p.distribution() for p in self.params}


@dataclass(frozen=True)
class Settings:
    """``hydra.sweeper.*``: how the space is searched (conf/hydra/sweeper/optuna.yaml documents each)."""

    n_trials: int
    direction: str
    sampler: str
    seed: int | None
    metric: str
    pruner: str
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1  # trials asked for at once, launched as one call
    storage: str | None = None  # the study's RDB storage URL; None: beside the MLflow store (optuna_study.py)

    @property
    def worst(self) -> float:
        """The value a diverged trial is told: the worst there is in the study's direction."""
        return math.inf if self.direction == "minimize" else -math.inf


@dataclass(frozen=True)
class SearchPlan:
    """What the sweep's callback needs of an optimising sweep before its parent run starts."""

    space: Space
    settings: Settings

    @property
    def keys(self) -> list[str]:
        return self.space.keys

    @property
    def swept(self) -> list[str]:
        return [redact(p.written) for p in self.space.params]

    @property
    def probes(self) -> list[list[str]]:
        return self.space.probes()


def is_search(config: DictConfig) -> bool:
    """Whether the sweep's sweeper is lrlab's Optuna sweeper (``hydra/sweeper=optuna``)."""
    sweeper = config.hydra.get("sweeper") or {}
    return str(sweeper.get("_target_", "")).endswith("OptunaSweeper")


def plan_search(config: DictConfig) -> SearchPlan | None:
    """The space and settings of an optimising sweep, each checked; None for another sweeper."""
    if not is_search(config):
        return None
    sweeper = config.hydra.sweeper
    settings = read_settings(sweeper, config)
    space = read_space(config)
    if not space.params:
        raise UsageError(
            f"{SWEEPER}.params: an optimising sweep needs a space, e.g. 'lr=tag(log,interval(0.001,1))' on the "
            "command line or in hydra.sweeper.params"
        )
    if not config.get("rerun", True):
        raise UsageError(
            "rerun=false: an Optuna study resumes by itself (the same command runs the trials still to do), and "
            "each trial is a new run; leave rerun out"
        )
    if settings.pruner != "none" and _launcher(config) == "vectorized":
        raise UsageError(
            f"{SWEEPER}.pruner={settings.pruner}: launcher=vectorized trains a batch of trials in one pass and "
            "cannot stop one of them early; use pruner=none, or launcher=basic or joblib"
        )
    return SearchPlan(space, settings)


def read_space(config: DictConfig) -> Space:
    """The space from ``hydra.sweeper.params`` and the command line (the command line wins for a key given twice)."""
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + task_overrides(config.hydra)
    return parse_space(arguments, config)


def parse_space(arguments: list[str], config: DictConfig) -> Space:
    """The space of ``arguments`` (overrides as written) over the composed ``config`` (which tells an int key)."""
    by_key: dict[str, Override] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        by_key.pop(override.key_or_group, None)  # a later one replaces it, in its own place
        by_key[override.key_or_group] = override
    searched, fixed = [], []
    for override in by_key.values():
        if not override.is_sweep_override():
            fixed.append(str(override.input_line))
            continue
        if override.key_or_group in NOT_SEARCHED:
            raise UsageError(
                f"{override.key_or_group}: a sweep lives in one store and one experiment (its study); "
                "run one sweep for each value"
            )
        if override.is_delete() or override.is_force_add() or override.package is not None:
            raise UsageError(f"{override.key_or_group}: {override.input_line}: search a key as key=... or +key=...")
        searched.append(_param(override, config))
    return Space(tuple(searched), tuple(fixed))


def _param(override: Override, config: DictConfig) -> Param:
    key, written = str(override.key_or_group), str(override.input_line)
    value = override.value()
    prefix = "+" if override.is_add() else ""
    tags = set(getattr(value, "tags", set()) or set())
    if tags - {"log"}:
        raise UsageError(f"{key}: {written}: the only tag an optimising sweep reads is log, as tag(log,interval(...))")
    if isinstance(value, IntervalSweep):
        return _interval(key, written, value, "log" in tags, _holds_int(config, key), prefix)
    if "log" in tags:
        raise UsageError(f"{key}: {written}: log goes with an interval, as tag(log,interval(a,b))")
    if isinstance(value, Glob):
        if not is_group(key):
            raise UsageError(f"{key}: {written}: glob() chooses among a config group's options; {key} is not a group")
        chosen = value.filter(options(key))
        if not chosen:
            raise UsageError(f"{key}: {written} matches no option of {key}: choose among {', '.join(options(key))}")
        return Param(key, written, "choice", choices=tuple(chosen), prefix=prefix)
    if isinstance(value, RangeSweep) and not value.shuffle:
        return _range(key, written, override, value, prefix)
    if isinstance(value, (ChoiceSweep, RangeSweep)):
        choices = tuple(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise UsageError(f"{key}: {written} has no values to choose from")
        if any(not isinstance(c, (str, int, float, bool)) for c in choices):
            raise UsageError(f"{key}: {written}: a choice takes plain values (numbers, words, true/false)")
        return Param(key, written, "choice", choices=choices, prefix=prefix)
    raise UsageError(f"{key}: {written}: an optimising sweep reads interval(), choice(), range() and glob()")


def _interval(key: str, written: str, value: IntervalSweep, log: bool, whole: bool, prefix: str) -> Param:
    low, high = float(value.start), float(value.end)  # type: ignore[arg-type]
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise UsageError(f"{key}: {written} is empty: an interval's start must be below its end")
    if log and low <= 0:
        raise UsageError(f"{key}: {written}: a log interval needs a start above 0")
    if whole and not (low.is_integer() and high.is_integer()):
        raise UsageError(f"{key}: {written}: {key} holds whole numbers, so the interval's ends must be too")
    return Param(key, written, "int" if whole else "float", low, high, log=log, prefix=prefix)


def _range(key: str, written: str, override: Override, value: RangeSweep, prefix: str) -> Param:
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if not values:
        raise UsageError(f"{key}: {written} has no values: the sweep has no trials")
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    step = float(value.step or 1)
    if len(values) == 1:
        return Param(key, written, "choice", choices=tuple(values), prefix=prefix)
    if step < 0:  # range(5,1,-1): the same values, ordered up
        values, step = values[::-1], -step
    low, high = cast(float, values[0]), cast(float, values[-1])  # a range lists numbers
    return Param(key, written, "int" if whole else "float", float(low), float(high), step, prefix=prefix)


def _holds_int(config: DictConfig, key: str) -> bool:
    """Whether ``key`` holds whole numbers in the composed config (its schema's type)."""
    node = OmegaConf.select(config, key, default=None, throw_on_missing=False)
    return isinstance(node, int) and not isinstance(node, bool)


def _tidy(value: float, step: float | None) -> float:
    """``value`` without the float noise of a stepped range (0.7000000000000001 is 0.7 on a 0.1 grid)."""
    if step is None:
        return float(value)
    decimals = max(0, -math.floor(math.log10(abs(step))) + 6) if step else 12
    return round(float(value), decimals)


def spell(value: Any) -> str:
    """A value as a Hydra override spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def read_settings(sweeper: DictConfig, config: DictConfig) -> Settings:
    """``hydra.sweeper.*`` checked, each refusal one line naming its key."""

    def one_of(name: str, allowed: tuple[str, ...]) -> str:
        value = str(sweeper.get(name))
        if value not in allowed:
            raise UsageError(f"{SWEEPER}.{name}={value} is not an option: choose one of {', '.join(allowed)}")
        return value

    def whole(name: str, minimum: int, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UsageError(f"{SWEEPER}.{name}={value}: a whole number >= {minimum}")
        return value

    n_trials = whole("n_trials", 1, sweeper.get("n_trials"))
    seed = sweeper.get("seed")
    if seed is not None:
        whole("seed", 0, seed)
    metric = str(sweeper.get("metric"))
    pruner = one_of("pruner", PRUNERS)
    if metric not in EPOCH_SCORES + RUN_METRICS:
        raise UsageError(
            f"{SWEEPER}.metric={metric}: not a metric a run logs; choose one of {', '.join(EPOCH_SCORES + RUN_METRICS)}"
        )
    if pruner != "none" and metric not in EPOCH_SCORES:
        raise UsageError(
            f"{SWEEPER}.pruner={pruner}: a pruner hears the metric each epoch, and {metric} is logged once; "
            f"score by one of {', '.join(EPOCH_SCORES)}"
        )
    kwargs = OmegaConf.to_container(sweeper.get("pruner_kwargs") or OmegaConf.create({}))
    assert isinstance(kwargs, dict)
    batch = sweeper.get("batch_size")
    if batch is None:
        batch = DEFAULT_BATCH.get(_launcher(config), 1)
        if batch == 0:  # as many as the launcher runs at once (n_jobs=-1, every core: one batch of 8)
            n_jobs = int(config.hydra.launcher.get("n_jobs") or 1)
            batch = n_jobs if n_jobs >= 1 else 8
    storage = sweeper.get("storage")
    return Settings(
        n_trials=n_trials,
        direction=one_of("direction", DIRECTIONS),
        sampler=one_of("sampler", SAMPLERS),
        seed=seed,
        metric=metric,
        pruner=pruner,
        pruner_kwargs={str(k): v for k, v in kwargs.items()},
        batch_size=whole("batch_size", 1, batch),
        storage=str(storage) if storage else None,
    )


def _launcher(config: DictConfig) -> str:
    """The sweep's launcher as lrlab names it (``basic``, ``joblib``, ``vectorized``...)."""
    return str(config.hydra.runtime.choices.get("launcher", "basic"))
