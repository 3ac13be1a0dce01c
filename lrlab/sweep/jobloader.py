"""Each job of a sweep composed once (docs/sweeps.md#each-job-composed-once): Hydra's config loader, one compose per
set of jobs that differ only in plain values. Each other job is a copy of that compose with its own values set as
Hydra sets them (``OmegaConf.update(..., merge=True)`` on the struct config); a value Hydra would reject takes
Hydra's own compose, so it is refused in Hydra's words. ``tests/unit/test_identity.py`` holds both ways equal."""

from __future__ import annotations

import copy
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict

from lrlab.sweep.compose import is_group
from lrlab.sweep.hydra_internals import get_overrides_dirname  # the loader's own, as Hydra computes it


class JobLoader(ConfigLoader):
    """Hydra's ``ConfigLoader``, composing a sweep's jobs once per set of jobs that share their choices."""

    def __init__(self, inner: ConfigLoader) -> None:
        self.inner = inner
        self._bases: dict[tuple[Any, ...], DictConfig] = {}  # pristine: every job is a copy

    def __getstate__(self) -> dict[str, Any]:  # a worker process gets the loader, not this process's composes
        return {"inner": self.inner, "_bases": {}}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        parsed = OverridesParser.create(config_loader=self.inner).parse_overrides(list(sweep_overrides))
        plain = [o for o in parsed if is_plain_value(o)]
        shared = tuple(o.input_line or "" for o in parsed if not is_plain_value(o))
        key = (*_master_key(master_config), shared, tuple(str(o.key_or_group) for o in plain))
        base = self._bases.get(key)
        if base is None:
            job = self.inner.load_sweep_config(master_config, list(sweep_overrides))
            self._bases[key] = copy.deepcopy(job)
        else:
            job = copy.deepcopy(base)
            try:
                for override in plain:  # struct: a key the config lacks raises, as in Hydra
                    OmegaConf.update(job, override.key_or_group, override.value(), merge=True)
            except Exception:  # Hydra's own refusal, in Hydra's words
                return self.inner.load_sweep_config(master_config, list(sweep_overrides))
            task = [o for o in parsed if not o.is_hydra_override()]
            with open_dict(job.hydra):
                job.hydra.overrides.task = [o.input_line for o in task]
                options = job.hydra.job.config.override_dirname
                job.hydra.job.override_dirname = get_overrides_dirname(
                    task, exclude_keys=options.exclude_keys, item_sep=options.item_sep, kv_sep=options.kv_sep
                )
            OmegaConf.copy_cache(from_config=master_config, to_config=job)
        return job

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.inner.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.inner.get_search_path()

    def get_sources(self) -> Any:
        return self.inner.get_sources()

    def list_groups(self, parent_name: str) -> Any:
        return self.inner.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.compute_defaults_list(*args, **kwargs)


def _master_key(master_config: DictConfig) -> tuple[str, ...]:
    """What a job's composition takes from the sweep's config: its name and Hydra's own overrides."""
    return (str(master_config.hydra.job.config_name), *master_config.hydra.overrides.hydra)


def is_plain_value(override: Override) -> bool:
    """``key=value`` for a key of the config with a value that is not a dict: not a group's option, not
    added or deleted, not Hydra's (a dict value merges into what is there, so it is composed)."""
    key = str(override.key_or_group)
    if override.is_add() or override.is_delete() or override.is_force_add() or override.package is not None:
        return False
    if override.is_hydra_override() or "/" in key or is_group(key):
        return False
    return not isinstance(override.value(), dict)
