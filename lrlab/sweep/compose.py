"""Hydra's side of the schema: where the YAML options are, and a composed config as a typed ``Config``.

Types and unknown keys are refused by OmegaConf when the YAML is merged onto ``Config``; ``to_config`` then
builds the dataclass, whose ``__post_init__`` refuses ranges and cross-field rules as ``ConfigError``.
"""

from __future__ import annotations

import functools
from copy import deepcopy
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import Container, DictConfig, OmegaConf, open_dict

from lrlab.core.config import Config, ConfigError
from lrlab.record.keys import flatten
from lrlab.record.provenance import job_tree

# The YAML options Hydra composes onto Config: lrlab/conf in an installed wheel, conf/ in a checkout.
_PACKAGED = Path(__file__).resolve().parent.parent / "conf"
CONF_DIR = _PACKAGED if (_PACKAGED / "config.yaml").is_file() else Path(__file__).resolve().parents[2] / "conf"
# Groups whose option files each set the group's ``name``: a choice and its name must agree.
NAMED_GROUPS = ("dataset", "model", "loss", "optimizer", "reader", "device", "engine")


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


@functools.cache  # the option files do not change while lrlab runs; every job's validation asks
def option_name(group: str, option: str) -> str | None:
    """The ``name`` that the option file ``conf/<group>/<option>.yaml`` sets, if it sets one."""
    path = CONF_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return None
    loaded = OmegaConf.load(path)
    name = loaded.get("name") if isinstance(loaded, DictConfig) else None
    return None if name is None else str(name)


def to_config(dcfg: DictConfig, choices: dict[str, Any] | None = None) -> Config:
    """The typed, validated config (raises ``ConfigError`` or an OmegaConf validation error).

    Refuses a key the schema does not have (even one added with ``+``) and, given Hydra's group
    choices, a group whose ``name`` is not the name its chosen option sets (``loss=mse loss.name=squared``).
    """
    # Each of the job's nodes is typed by the schema already: build the Config from them, without copying
    # the config (Hydra's node, which a copy would carry too, is most of it).
    schema = {f.name for f in fields(Config)}
    cfg = Config(**{str(key): _object(node) for key, node in dcfg.items_ex(resolve=True) if key in schema})
    unknown = sorted(set(flatten(job_tree(dcfg))) - _field_keys(cfg))
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: no such key (check the spelling; `.venv/bin/lrlab --cfg job` lists every key)"
        )
    for group in NAMED_GROUPS:
        choice = (choices or {}).get(group)
        expected = option_name(group, str(choice)) if choice else None
        actual = getattr(cfg, group).name
        actual = actual.value if isinstance(actual, Enum) else str(actual)
        if expected is not None and expected != actual:
            raise ConfigError(
                f"{group}.name={actual!r} disagrees with the choice {group}={choice} (whose name is {expected!r}): "
                f"choose the option with {group}=<option>, or set a study's option with `- override /{group}: ...`"
            )
    return cfg


def register_configs() -> None:
    """Make ``Config`` the schema that ``conf/config.yaml`` composes onto."""
    ConfigStore.instance().store(name="lrlab_schema", node=Config)
