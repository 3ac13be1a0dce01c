"""The schema of every lrlab run: typed dataclasses that Hydra composes the YAML options onto.

Types and unknown keys are refused by OmegaConf when the YAML is merged; ranges and cross-field
rules are refused in ``__post_init__``, which runs inside ``OmegaConf.to_object``. Every refusal is a
``ConfigError`` whose message names the dotted key and what is allowed, so the CLI can print it as one
line. Plain dataclasses: nothing here imports Hydra, OmegaConf or MLflow (``lrlab/sweep/compose.py`` registers
them with Hydra).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch

    from lrlab.core.table import Table

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes at most 64 bits
MAX_EXPERIMENT_NAME = 500  # MLflow's limit


class ConfigError(ValueError):
    """A user error in the configuration: printed as one line, never as a traceback."""


def _require(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {key} must be {allowed}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ModelName(Enum):
    scratch = "scratch"  # manual tensors w (d, 1) and b (1,), the seed's §3.2
    linear = "linear"  # nn.Linear(d, 1), the seed's §3.3


class LossName(Enum):
    squared = "squared"  # ½(ŷ−y)², the seed's §3.2 loss
    mse = "mse"  # nn.MSELoss, (ŷ−y)² with no ½: the same lr is a step twice as large


class OptimizerName(Enum):
    sgd_scratch = "sgd_scratch"  # the seed's hand-written minibatch SGD
    sgd = "sgd"  # torch.optim.SGD (momentum optional)
    adam = "adam"  # torch.optim.Adam


class ReaderName(Enum):
    permutation = "permutation"  # one torch.randperm per epoch, contiguous slices (fast default)
    shuffled_index = "shuffled_index"  # the seed's data_iter: random.shuffle of a Python list
    dataloader = "dataloader"  # the seed's §3.3 DataLoader over a TensorDataset
    with_replacement = "with_replacement"  # n uniform draws per epoch: SGD's theory holds exactly (theory.py)


class EngineName(Enum):
    autograd = "autograd"  # the seed's loop: modules, backward(), the step-6 optimiser; every device
    compiled = "compiled"  # the same update as a numba kernel, float32

    @property
    def devices(self) -> tuple[str, ...]:
        """The ``device`` options the engine runs on. ``compiled`` refuses ``auto`` too: whether a config runs
        must not depend on the machine it is validated on."""
        return ("cpu",) if self is EngineName.compiled else ("cpu", "cuda", "mps", "auto")


class ScheduleName(Enum):
    constant = "constant"  # lr at every step (the default)
    step = "step"  # lr · gamma^⌊epoch / every⌋: multiplied by gamma every ``every`` epochs
    inverse_time = "inverse_time"  # lr / (1 + t/tau), t the steps taken
    cosine = "cosine"  # lr · ½(1 + cos(π t/T)) over the T steps of training after the warm-up


class AveragingName(Enum):
    none = "none"  # the last iterate only
    polyak = "polyak"  # also the mean of every iterate (Polyak–Ruppert)
    tail = "tail"  # also the mean of the iterates of the last ``averaging.tail`` fraction of the steps


class DeviceName(Enum):
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"
    auto = "auto"  # cuda if there is one, else mps if there is one, else cpu


# What a run's parameter errors (w_error, b_error, ols_w_error, ...) are measured against: the tag lrlab.errors_against.
TRUE_PARAMETERS = "true_parameters"  # synthetic data: the true_w and true_b that generated it
LEAST_SQUARES_FIT = "least_squares_fit"  # a table has no true parameters: the least-squares fit on it stands in
SYNTHETIC_KEYS = ("true_w", "true_b", "num_examples", "noise_std")  # null for a table
TABLE_KEYS = ("path", "target", "features")  # null for synthetic data


@dataclass
class DatasetConfig:
    """Step 1, the data. Synthetic (``path`` null, the default): y = X @ true_w + true_b + N(0, noise_std²),
    X ~ N(0, 1) of shape (num_examples, d). A table (``dataset=csv``): the rows of the CSV file at ``path``,
    ``target`` as y and ``features`` as X (``lrlab/core/table.py``); the synthetic keys are null, and a run's
    parameter errors are measured against the least-squares fit on the table."""

    name: str = "synthetic"
    true_w: Optional[list[float]] = field(default_factory=lambda: [2.0, -3.4])  # d = len(true_w)
    true_b: Optional[float] = 4.2
    num_examples: Optional[int] = 1000
    noise_std: Optional[float] = 0.01
    # A CSV file with a header row. A relative path is read from the folder lrlab started in, whatever folder a
    # job runs in (hydra.job.chdir); here it is made absolute.
    path: Optional[str] = None
    target: Optional[str] = None  # the label column
    features: Optional[list[str]] = None  # the feature columns; null: every numeric column but the target

    def __post_init__(self) -> None:
        if self.path is not None:
            self._check_table()
            return
        for key in TABLE_KEYS[1:]:
            value = getattr(self, key)
            _require(value is None, f"dataset.{key}", "null unless dataset.path names a table (dataset=csv)", value)
        _require(
            self.true_w is not None and len(self.true_w) > 0 and all(_is_number(v) for v in self.true_w),
            "dataset.true_w",
            "a non-empty list of finite numbers",
            self.true_w if self.true_w is None else list(self.true_w),
        )
        _require(_is_number(self.true_b), "dataset.true_b", "a finite number", self.true_b)
        _require(
            self.num_examples is not None and self.num_examples > 0,
            "dataset.num_examples",
            "a positive integer",
            self.num_examples,
        )
        _require(
            self.noise_std is not None and _is_number(self.noise_std) and self.noise_std >= 0,
            "dataset.noise_std",
            "a finite number >= 0",
            self.noise_std,
        )

    def _check_table(self) -> None:
        assert self.path is not None
        for key in SYNTHETIC_KEYS:
            value = getattr(self, key)
            _require(value is None, f"dataset.{key}", "null with dataset.path (a table's rows are the data)", value)
        _require(bool(self.path.strip()), "dataset.path", "a CSV file", self.path)
        _require(bool(self.target and self.target.strip()), "dataset.target", "the name of a column", self.target)
        self.path = os.path.abspath(os.path.expanduser(self.path))
        self.table()  # a missing file, column or number is refused here, before any run exists

    @property
    def errors_against(self) -> str:
        """What a run's parameter errors are measured against: ``TRUE_PARAMETERS`` or ``LEAST_SQUARES_FIT``."""
        return TRUE_PARAMETERS if self.path is None else LEAST_SQUARES_FIT

    def table(self) -> Table:
        """The table at ``path`` (``dataset=csv``), read and checked (``lrlab/core/table.py``)."""
        from lrlab.core.table import TableError, read_table  # a table's reader: only where there is a table

        assert self.path is not None and self.target is not None, "not a table: dataset.path is null"
        try:
            return read_table(self.path, self.target, self.features)
        except TableError as error:
            raise ConfigError(str(error)) from None

    def shape(self) -> tuple[int, int]:
        """(n, d): the data's examples and features, known without making the data."""
        if self.path is not None:
            table = self.table()
            return table.num_examples, len(table.features)
        assert self.num_examples is not None and self.true_w is not None
        return self.num_examples, len(self.true_w)


@dataclass
class ModelConfig:
    """Steps 3-4: the model and its initialisation w ~ N(0, init_std²), b = 0."""

    name: ModelName = ModelName.scratch
    init_std: float = 0.01

    def __post_init__(self) -> None:
        _require(
            _is_number(self.init_std) and self.init_std >= 0,
            "model.init_std",
            "a finite number >= 0",
            self.init_std,
        )


@dataclass
class LossConfig:
    """Step 5: the per-example loss. ``squared`` is ½(ŷ−y)²; ``mse`` is (ŷ−y)², twice the gradient."""

    name: LossName = LossName.squared


@dataclass
class OptimizerConfig:
    """Step 6: the update rule. The learning rate is the top-level ``lr``."""

    name: OptimizerName = OptimizerName.sgd_scratch
    momentum: float = 0.0  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam only

    def __post_init__(self) -> None:
        _require(
            _is_number(self.momentum) and 0 <= self.momentum < 1,
            "optimizer.momentum",
            "a number in [0, 1)",
            self.momentum,
        )
        _require(
            self.momentum == 0 or self.name is OptimizerName.sgd,
            "optimizer.momentum",
            "0 unless optimizer.name is sgd",
            self.momentum,
        )
        _require(
            len(self.betas) == 2 and all(_is_number(v) and 0 <= v < 1 for v in self.betas),
            "optimizer.betas",
            "two numbers in [0, 1)",
            list(self.betas),
        )


@dataclass
class ReaderConfig:
    """Step 2: how minibatches are read. Every reader draws afresh each epoch; all but ``with_replacement``
    visit every example once an epoch."""

    name: ReaderName = ReaderName.permutation


@dataclass
class ScheduleConfig:
    """The learning rate at each step: the top-level ``lr`` times the schedule's factor, after an optional
    linear warm-up over ``warmup`` steps (factor (t+1)/warmup for the first ``warmup`` steps t = 0, 1, ...)."""

    name: ScheduleName = ScheduleName.constant
    warmup: int = 0  # steps of linear warm-up; the schedule's own t counts from the warm-up's end
    every: int = 1  # step: epochs between two decays
    gamma: float = 0.1  # step: the factor of each decay
    tau: float = 100.0  # inverse_time: the steps after which the lr is halved

    def __post_init__(self) -> None:
        _require(self.warmup >= 0, "schedule.warmup", "an integer >= 0 (steps)", self.warmup)
        _require(self.every > 0, "schedule.every", "a positive integer (epochs)", self.every)
        _require(_is_number(self.gamma) and 0 < self.gamma <= 1, "schedule.gamma", "a number in (0, 1]", self.gamma)
        _require(_is_number(self.tau) and self.tau > 0, "schedule.tau", "a finite number > 0 (steps)", self.tau)


@dataclass
class AveragingConfig:
    """Iterate averaging: a model beside the trained one, the running mean (float64) of the iterates."""

    name: AveragingName = AveragingName.none
    tail: float = 0.5  # tail: the fraction of the training's steps, at its end, whose iterates are averaged

    def __post_init__(self) -> None:
        _require(_is_number(self.tail) and 0 < self.tail <= 1, "averaging.tail", "a number in (0, 1]", self.tail)


@dataclass
class DeviceConfig:
    name: DeviceName = DeviceName.cpu

    def __post_init__(self) -> None:
        if self.name is not DeviceName.cpu:  # the CPU is always there (and checking it would import torch)
            self.resolve()  # refuse a device that is not there before any run starts

    def resolve(self) -> torch.device:
        """The torch device to run on; ``auto`` picks cuda, then mps, then cpu."""
        import torch  # here, so that validating a config (the CLI's refusals) does not load torch

        cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
        if self.name is DeviceName.auto:
            return torch.device("cuda" if cuda else "mps" if mps else "cpu")
        there = {DeviceName.cpu: True, DeviceName.cuda: cuda, DeviceName.mps: mps}[self.name]
        _require(
            there,
            "device",
            f"one that exists here (this machine has no {self.name.value}; try device=cpu or device=auto)",
            self.name.value,
        )
        return torch.device(self.name.value)

    def kind(self) -> str:
        """The device type this config runs on (``cpu``, ``cuda``, ``mps``); only ``auto`` asks torch."""
        return self.resolve().type if self.name is DeviceName.auto else self.name.value


@dataclass
class EngineConfig:
    """Step 7: what runs the training loop. ``autograd`` is the seed's loop (modules, ``backward()``, the
    step-6 optimiser), on every device; ``compiled`` is the same update as a numba kernel, float32, CPU only.
    Each engine is a module of ``lrlab/core/engines/``."""

    name: EngineName = EngineName.autograd


def derive_seed(seed: int, stream: str) -> int:
    """An independent seed for one random stream (data, init, shuffle), derived from ``seed``."""
    digest = hashlib.sha256(f"lrlab:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class Config:
    """One lrlab run. Defaults reproduce d2l §3.2; ``model=linear loss=mse optimizer=sgd`` gives §3.3."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)

    lr: float = 0.03
    batch_size: int = 10
    num_epochs: int = 3
    seed: int = 0
    # Separate random streams; None derives each from ``seed``.
    data_seed: Optional[int] = None
    init_seed: Optional[int] = None
    shuffle_seed: Optional[int] = None

    experiment_name: str = "lrlab"
    # None: $MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db in the directory lrlab runs from.
    tracking_uri: Optional[str] = None
    # false: a job whose config already has a FINISHED run is skipped (resumable studies set this).
    rerun: bool = True
    # Stop a job when its loss or parameters pass this size (divergence); it ends FAILED.
    divergence_threshold: float = 1e12
    # A RUNNING run of another host whose heartbeat is older than this (seconds) is ended KILLED as an
    # orphan; runs of this host are ended as soon as their process is gone (see lrlab/record/orphans.py).
    orphan_timeout: float = 900.0
    # true: each run also logs loss_curves.png. Off by default: the MLflow UI draws the same curves from
    # the metric histories, and drawing the figure (matplotlib) costs a small run most of its time. A sweep
    # draws comparison.png.
    plot_curves: bool = False
    # torch's intra-op threads for the run. How many decides how torch splits a sum, so every run of a config
    # uses the same number, whatever process or launcher runs it (a joblib worker would have one).
    threads: int = 1
    # k > 0: the run also logs measured_excess_loss, the mean excess_loss of its last k epochs, and its ratio to
    # SGD's theory_excess_loss (excess_loss_ratio); 0: neither.
    theory_epochs: int = 0

    def __post_init__(self) -> None:
        _require(_is_number(self.lr) and self.lr > 0, "lr", "a finite number > 0", self.lr)
        _require(self.batch_size > 0, "batch_size", "a positive integer", self.batch_size)
        num_examples = self.dataset.shape()[0]
        rows = "dataset.num_examples" if self.dataset.path is None else "the rows of dataset.path"
        _require(self.batch_size <= num_examples, "batch_size", f"at most {rows} ({num_examples})", self.batch_size)
        _require(self.num_epochs > 0, "num_epochs", "a positive integer", self.num_epochs)
        _require(0 <= self.seed <= SEED_MAX, "seed", f"an integer in [0, 2**64-1 = {SEED_MAX}]", self.seed)
        for key in ("data_seed", "init_seed", "shuffle_seed"):
            value = getattr(self, key)
            _require(value is None or 0 <= value <= SEED_MAX, key, "null or an integer in [0, 2**64-1]", value)
        _require(bool(self.experiment_name.strip()), "experiment_name", "a non-empty string", self.experiment_name)
        _require(
            self.tracking_uri is None or bool(self.tracking_uri.strip()),
            "tracking_uri",
            "a URI, or left out for the default",
            self.tracking_uri,
        )
        _require(
            len(self.experiment_name) <= MAX_EXPERIMENT_NAME,
            "experiment_name",
            f"at most {MAX_EXPERIMENT_NAME} characters (MLflow's limit), not {len(self.experiment_name)}",
            self.experiment_name[:40] + "…",
        )
        _require(
            _is_number(self.divergence_threshold) and self.divergence_threshold > 0,
            "divergence_threshold",
            "a finite number > 0",
            self.divergence_threshold,
        )
        devices = self.engine.name.devices
        _require(
            self.device.name.value in devices,
            "engine",
            f"an engine that runs on device={self.device.name.value} "
            f"({self.engine.name.value} runs on device={' or '.join(devices)} only)",
            self.engine.name.value,
        )
        _require(1 <= self.threads <= 1024, "threads", "an integer in [1, 1024]", self.threads)
        _require(
            0 <= self.theory_epochs <= self.num_epochs,
            "theory_epochs",
            f"an integer in [0, num_epochs = {self.num_epochs}]",
            self.theory_epochs,
        )
        _require(
            _is_number(self.orphan_timeout) and self.orphan_timeout > 0,
            "orphan_timeout",
            "a finite number of seconds > 0",
            self.orphan_timeout,
        )

    def stream_seed(self, stream: str) -> int:
        """The seed of one random stream: ``data``, ``init`` or ``shuffle``."""
        given = getattr(self, f"{stream}_seed")
        return int(given) if given is not None else derive_seed(self.seed, stream)

    def identity(self) -> dict[str, Any]:
        """What determines the numbers, typed and resolved: the input of ``lrlab.config_hash``.

        Left out: where and how the run is recorded and kept (``experiment_name``, ``tracking_uri``,
        ``rerun``, ``orphan_timeout``, ``plot_curves``), labels
        (``dataset.name``) and settings the chosen optimizer ignores. A table (``dataset=csv``) counts as the
        sha256 of its file's bytes and the columns used, not as its path. Seeds appear as the three streams
        they give, and ``device`` as the device it resolved to, so that two spellings of one computation
        (``optimizer=momentum`` and ``optimizer=sgd optimizer.momentum=0.9``) have one identity. The engine
        counts only when it is not the default ``autograd``, the computation every run made before engines
        existed, so that those runs keep their identity; so do ``schedule`` and ``averaging`` (and of a
        schedule only the keys it reads).
        """
        tree = _plain(asdict(self))
        where = ("experiment_name", "tracking_uri", "rerun", "orphan_timeout", "plot_curves")
        for key in (*where, "seed", "data_seed", "init_seed", "shuffle_seed"):
            tree.pop(key)
        tree["streams"] = {stream: self.stream_seed(stream) for stream in ("data", "init", "shuffle")}
        tree["dataset"].pop("name")
        if self.dataset.path is None:  # synthetic: what generates it, as before tables existed
            for key in TABLE_KEYS:
                tree["dataset"].pop(key)
        else:  # a table: its content, not its path or mtime; nothing is drawn from the data stream
            table = self.dataset.table()
            tree["dataset"] = {"sha256": table.sha256, "target": table.target, "features": list(table.features)}
            tree["streams"].pop("data")
        tree["device"] = {"name": self.device.kind()}
        if self.optimizer.name is not OptimizerName.sgd:
            tree["optimizer"].pop("momentum")
        if self.optimizer.name is not OptimizerName.adam:
            tree["optimizer"].pop("betas")
        if self.threads == 1:  # the default: runs from before the key keep their identity
            tree.pop("threads")
        if self.theory_epochs == 0:  # the default, likewise
            tree.pop("theory_epochs")
        if self.engine.name is EngineName.autograd:
            tree.pop("engine")
        if self.schedule == ScheduleConfig():  # the defaults, likewise
            tree.pop("schedule")
        else:  # only the keys the chosen schedule reads
            unread = {ScheduleName.constant: ("every", "gamma", "tau"), ScheduleName.step: ("tau",)}
            unread |= {ScheduleName.inverse_time: ("every", "gamma"), ScheduleName.cosine: ("every", "gamma", "tau")}
            for key in unread[self.schedule.name]:
                tree["schedule"].pop(key)
        if self.averaging.name is AveragingName.none:
            tree.pop("averaging")
        elif self.averaging.name is AveragingName.polyak:
            tree["averaging"].pop("tail")
        return tree


def _plain(value: Any) -> Any:
    """Enums as their values, all the way down."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, Enum) else value
