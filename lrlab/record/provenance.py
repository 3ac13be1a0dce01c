"""What a run records about where it came from: config identity, code version and environment.

Pure: no MLflow here, only the names of the tags that MLflow's UI reads.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import Container, DictConfig, OmegaConf

from lrlab.core.config import Config
from lrlab.record.keys import flatten
from lrlab.record.redact import redact, redact_uri

if TYPE_CHECKING:
    import torch

# MLflow's standard tags (mlflow.utils.mlflow_tags), which its UI shows as Source, Version and User.
MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME = "mlflow.source.git.commit", "mlflow.source.name"
MLFLOW_SOURCE_TYPE, MLFLOW_USER = "mlflow.source.type", "mlflow.user"
GROUPS = ("dataset", "model", "loss", "optimizer", "reader", "device", "engine", "schedule", "averaging", "launcher")
PACKAGE = Path(__file__).resolve().parents[1]  # lrlab/
REPO_ROOT = PACKAGE.parent


def job_tree(dcfg: DictConfig, **to_container: Any) -> dict[str, Any]:
    """The job's resolved config as plain containers, without Hydra's node and without copying the config."""
    return {
        str(key): OmegaConf.to_container(node, resolve=True, **to_container) if isinstance(node, Container) else node
        for key, node in dcfg.items_ex(resolve=True)
        if key != "hydra"
    }


def run_params(dcfg: DictConfig, choices: dict[str, Any]) -> dict[str, Any]:
    """Every leaf of the resolved job config (Hydra's node left out) as a dotted key, plus each group's chosen
    option.

    A null setting is left out; the tracking URI is logged without its password.
    """
    tree = job_tree(dcfg, enum_to_str=True)
    if tree.get("tracking_uri"):
        tree["tracking_uri"] = redact_uri(str(tree["tracking_uri"]))
    params = {**flatten(tree), **{group: choices[group] for group in GROUPS if choices.get(group)}}
    return {key: value for key, value in params.items() if value is not None}


def config_yaml(dcfg: DictConfig) -> str:
    """The composed config as YAML, as the job saw it, without any password."""
    return redact(OmegaConf.to_yaml(dcfg, resolve=True))


def config_hash(cfg: Config) -> str:
    """The identity of a computation (docs/record.md#identity): the typed, resolved config that determines the
    numbers, as ``Config.identity`` gives it."""
    return hashlib.sha256(json.dumps(cfg.identity(), sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def code_digest() -> str:
    """A digest of lrlab's own source (every .py file of the package): the code that computed a run."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _source_name() -> str:
    """The entry point that ran, as MLflow's Source column shows it (e.g. ``lrlab/run.py``)."""
    entry = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if entry is None or not entry.is_file():
        return "lrlab"
    return entry.relative_to(REPO_ROOT).as_posix() if entry.is_relative_to(REPO_ROOT) else entry.name


def code_tags() -> dict[str, str]:
    """The code that ran: lrlab's version and source digest, its git commit and whether the tree was dirty,
    and MLflow's standard source, version and user tags (the UI's Source, Version and User columns)."""
    return dict(_code_tags())  # a copy: callers add to it


@functools.cache  # one process runs one checkout: ask git once, not once per job
def _code_tags() -> dict[str, str]:
    commit = _git("rev-parse", "HEAD") if (REPO_ROOT / ".git").exists() else None
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    tags = {
        "lrlab.version": metadata.version("lrlab"),
        "lrlab.code_digest": code_digest(),
        "lrlab.git_commit": commit or "unknown",
        "lrlab.git_dirty": "unknown" if status is None else str(bool(status)).lower(),
        MLFLOW_SOURCE_NAME: _source_name(),
        MLFLOW_SOURCE_TYPE: "LOCAL",
        MLFLOW_USER: getpass.getuser(),
    }
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    return tags


def environment_tags(device: torch.device) -> dict[str, str]:
    """Versions of the stack and the device name: part of the record, since numbers depend on them."""
    return dict(_environment_tags(device))  # a copy: callers add to it


@functools.cache  # read once per process and device (package metadata)
def _environment_tags(device: torch.device) -> dict[str, str]:
    import torch

    tags = {"lrlab.env.python": platform.python_version()}
    for package in ("torch", "hydra-core", "omegaconf", "mlflow", "numba"):  # numba: engine=compiled's compiler
        tags[f"lrlab.env.{package}"] = metadata.version(package)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    tags["lrlab.env.device"] = f"{device.type}: {name}"
    return tags
