"""Hydra's side of the schema: where the YAML options are, and a composed config as a typed ``Config``.

Types and unknown keys are refused by OmegaConf when the YAML is merged onto ``Config``; ``to_config`` then
builds the dataclass, whose ``__post_init__`` refuses ranges and cross-field rules as ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import Container, DictConfig, OmegaConf, open_dict, read_write

from lrlab.core.config import (
    AveragingName,
    Config,
    ConfigError,
    DeviceName,
    EngineName,
    LossName,
    ModelName,
    OptimizerName,
    ReaderName,
    ScheduleName,
)
from lrlab.record.keys import flatten
from lrlab.record.provenance import GROUPS, job_tree

# The YAML options Hydra composes onto Config: lrlab/conf in an installed wheel, conf/ in a checkout.
_PACKAGED = Path(__file__).resolve().parent.parent / "conf"
CONF_DIR = _PACKAGED if (_PACKAGED / "config.yaml").is_file() else Path(__file__).resolve().parents[2] / "conf"
# The groups whose options are the members of one Enum: one ConfigStore node per member, {name: member}.
# conf/<group>/ holds only presets that set more than a name (optimizer=momentum, the datasets).
ENUM_GROUPS: dict[str, type[Enum]] = {
    "model": ModelName,
    "loss": LossName,
    "optimizer": OptimizerName,
    "reader": ReaderName,
    "device": DeviceName,
    "engine": EngineName,
    "schedule": ScheduleName,
    "averaging": AveragingName,
}
NAMED_GROUPS = tuple(group for group in GROUPS if group != "launcher")  # the groups with a ``name`` field


def job_config(config: DictConfig) -> DictConfig:
    """The config a job sees: the composed config without Hydra's own node."""
    job = deepcopy(config)  # keeps the structured type, so to_object builds a Config
    with open_dict(job):
        job.pop("hydra", None)
    return job


def _object(node: Any) -> Any:
    return OmegaConf.to_object(node) if isinstance(node, Container) else node


def _field_keys(schema: Any, prefix: str = "") -> set[str]:
    keys = set()
    for f in fields(schema):
        value = getattr(schema, f.name)
        keys |= _field_keys(value, f"{prefix}{f.name}.") if is_dataclass(value) else {f"{prefix}{f.name}"}
    return keys


def to_config(dcfg: DictConfig, choices: dict[str, Any] | None = None) -> Config:
    """The typed, validated config (raises ``ConfigError`` or an OmegaConf validation error).

    Refuses a key the schema does not have (even one added with ``+``) and, given Hydra's node, an override
    of a group's ``name``, which its chosen option sets (``loss=mse loss.name=squared``). A relative
    ``dataset.path`` is read from the folder lrlab started in (``started_in``).
    """
    # Each of the job's nodes is typed by the schema already: build the Config from them, without copying
    # the config (Hydra's node, which a copy would carry too, is most of it).
    schema = {f.name for f in fields(Config)}
    nodes = {str(key): node for key, node in dcfg.items_ex(resolve=True) if key in schema}
    if "dataset" in nodes:
        nodes["dataset"] = _located(nodes["dataset"], started_in(dcfg))
    cfg = Config(**{key: _object(node) for key, node in nodes.items()})
    unknown = sorted(set(flatten(job_tree(dcfg))) - _field_keys(cfg))
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: no such key (check the spelling; `.venv/bin/lrlab --cfg job` lists every key)"
        )
    overrides = task_overrides(dcfg.hydra) if "hydra" in dcfg else []
    for override in overrides:
        key, _, value = override.partition("=")
        group = key.lstrip("+~").removesuffix(".name")
        if group in NAMED_GROUPS and key.lstrip("+~") == f"{group}.name":
            choice = (choices or {}).get(group, "its default")
            raise ConfigError(
                f"{group}.name={value}: the choice {group}={choice} sets {group}.name; choose the option with "
                f"{group}=<option>, or set a study's option with `- override /{group}: ...`"
            )
    return cfg


def started_in(dcfg: DictConfig) -> Path:
    """The folder lrlab was started in (Hydra's ``runtime.cwd``): a job may run in another (``hydra.job.chdir``)."""
    cwd = OmegaConf.select(dcfg, "hydra.runtime.cwd") if "hydra" in dcfg else None
    if cwd is None and HydraConfig.initialized():  # a job's config: Hydra's node is kept apart
        cwd = HydraConfig.get().runtime.cwd
    return Path(cwd) if cwd else Path.cwd()


def _located(node: Any, start: Path) -> Any:
    """The dataset node with a relative ``path`` (a table's) made absolute from ``start``."""
    path = node.get("path") if isinstance(node, DictConfig) else None
    if not isinstance(path, str) or not path.strip() or Path(path).expanduser().is_absolute():
        return node
    located = deepcopy(node)  # the job's own config stays as composed (and as recorded)
    with read_write(located):
        located.path = str(start / path)
    return located


def task_overrides(hydra_node: Any) -> list[str]:
    """The job's overrides as typed (``hydra.overrides.task``), ``${...}`` left as written, as Hydra reads them."""
    return [str(o) for o in OmegaConf.to_container(hydra_node.overrides.task, resolve=False)]  # type: ignore[union-attr]


@contextmanager
def resolving(dcfg: DictConfig) -> Iterator[None]:
    """``${hydra:...}`` values in ``dcfg`` resolved against its own Hydra node, as they are in its job (Hydra sets
    its config only when a job runs); the config Hydra had is put back after."""
    if "hydra" not in dcfg:
        yield
        return
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(dcfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved


def register_configs() -> None:
    """Make ``Config`` the schema that ``conf/config.yaml`` composes onto, and each Enum member an option."""
    store = ConfigStore.instance()
    store.store(name="lrlab_schema", node=Config)
    for group, names in ENUM_GROUPS.items():
        for member in names:
            store.store(group=group, name=member.value, node={"name": member.value})


def is_group(key: str) -> bool:
    """Whether ``key`` names a config group (``model``, ``experiment``...), whose value is an option."""
    return key in ENUM_GROUPS or (CONF_DIR / key).is_dir()


def options(group: str) -> list[str]:
    """The options of ``group``: its Enum's members and its presets in conf/<group>/."""
    presets = [path.stem for path in (CONF_DIR / group).glob("*.yaml")]
    return sorted({*presets, *(member.value for member in ENUM_GROUPS.get(group, ()))})
