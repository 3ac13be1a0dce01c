"""What a run records about where it came from: config identity, code version and environment."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import lrlab
from lrlab.tracking import flatten, redact

GROUPS = ("dataset", "model", "loss", "optimizer", "reader", "device", "launcher")

# Keys that say where a run is recorded or how it is launched, not what it computes.
NOT_IDENTITY = ("experiment_name", "tracking_uri", "rerun", "launcher")
REPO_ROOT = Path(lrlab.__file__).resolve().parent.parent


def run_params(dcfg: DictConfig, choices: dict[str, Any]) -> dict[str, Any]:
    """Every leaf of the resolved config as a dotted key, plus each group's chosen option."""
    tree: dict[str, Any] = OmegaConf.to_container(dcfg, resolve=True, enum_to_str=True)  # type: ignore[assignment]
    if tree.get("tracking_uri"):
        tree["tracking_uri"] = redact(str(tree["tracking_uri"]))
    return {**flatten(tree), **{group: choices[group] for group in GROUPS if choices.get(group)}}


def config_hash(params: dict[str, Any]) -> str:
    """The identity of a run's config: the same resolved config gives the same hash."""
    identity = {k: v for k, v in params.items() if k.split(".")[0] not in NOT_IDENTITY}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_tags() -> dict[str, str]:
    """The git commit of lrlab's checkout, whether its tree was dirty, and lrlab's version."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "lrlab.version": lrlab.__version__,
        "lrlab.git_commit": commit or "unknown",
        "lrlab.git_dirty": "unknown" if status is None else str(bool(status)).lower(),
    }


def environment_tags(device: torch.device) -> dict[str, str]:
    """Versions of the stack and the device name: part of the record, since numbers depend on them."""
    tags = {"lrlab.env.python": platform.python_version()}
    for package in ("torch", "hydra-core", "omegaconf", "mlflow"):
        tags[f"lrlab.env.{package}"] = metadata.version(package)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    tags["lrlab.env.device"] = f"{device.type}: {name}"
    return tags
