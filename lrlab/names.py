"""Pure helpers for what a run is called and how its settings are spelled: no MLflow, no Hydra."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PARENT_ENV = "LRLAB_PARENT_RUN_ID"  # the sweep's parent run, for its jobs (see lrlab/sweep.py)
SWEEP_KEYS_ENV = "LRLAB_SWEEP_KEYS"  # the keys the sweep varies, comma-separated, to name the jobs
GROUPS_ENV = "LRLAB_GROUP_RUNS"  # a sweep over seeds: JSON {group name: group run id}, for its jobs
REPLICATE_KEY = "seed"  # a sweep that varies it runs each configuration once per seed: replicates
# Where a run is recorded or how it is launched says nothing of what it computes: not part of its name.
NOT_IN_NAMES = ("tracking_uri", "experiment_name", "rerun", "orphan_timeout", "hydra.")
MAX_NAME = 250  # MLflow's limit for keys and for the run-name column
# scheme://user:password@ , also as Hydra escapes it in its logs: scheme\://user\:password@
_URI_WITH_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*\\?://[^\s:/@\\]*)(\\?:)[^\s@/]*@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by ***."""
    return _URI_WITH_PASSWORD.sub(r"\1\2***@", text)


class RedactPasswords(logging.Filter):
    """A logging filter (Hydra's own log lines among them) that writes URIs without their passwords."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def redact_uri(uri: str) -> str:
    """One URI with its password replaced by *** (the user name stays, to say who connects)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def shorten(name: str, limit: int = MAX_NAME) -> str:
    """``name`` if it fits, else its start, '…' and a digest of the whole: still unique, still readable."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - len(digest) - 2]}…{digest}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested mapping as dotted keys; lists stay whole (``dataset.true_w``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _name_after(overrides: list[str], keys: list[str] | None) -> str:
    """The overrides of ``keys`` (all of them for None), without where or how the run is recorded."""
    named = [o for o in overrides if keys is None or _key(o) in keys]
    named = [o for o in named if not _key(o).startswith(NOT_IN_NAMES)]
    return redact(" ".join(named)) or "defaults"


def job_run_name(task_overrides: list[str]) -> str:
    """A child is named after what its sweep varies (``lr=0.03``); a single run after its overrides."""
    return _name_after(task_overrides, sweep_keys() or None)


def sweep_keys() -> list[str]:
    """The keys the sweep in progress varies (empty outside a sweep)."""
    return [k for k in os.environ.get(SWEEP_KEYS_ENV, "").split(",") if k]


def group_name(job_overrides: list[str], keys: list[str]) -> str:
    """The group of a sweep's job over seeds: what the sweep varies apart from the seed (``lr=0.03``)."""
    return _name_after(job_overrides, [k for k in keys if k != REPLICATE_KEY])
