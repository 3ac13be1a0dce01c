"""How lrlab talks to the terminal: one line for what the user can fix, a traceback only for bugs; no library
chatter; no password in anything printed."""

from __future__ import annotations

import logging
import os
import re
from typing import TextIO

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from lrlab.core.config import ConfigError
from lrlab.record.errors import FAILURE_EXIT, USAGE_EXIT, JobsLost, LrlabError
from lrlab.record.redact import redact


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


def _root(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _omegaconf_line(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None)
    message = _first_line(str(error))
    if "Key '" in message and "not in" in message:  # a misspelled key
        match = re.search(r"Key '([^']+)'", message)
        name = f"{key}" if key else (match.group(1) if match else "?")
        return f"{name}: no such key (check the spelling; `.venv/bin/lrlab --cfg job` lists every key)"
    return f"{key}: {message}" if key else message


LAUNCHER_MODULES = ("hydra_plugins", "joblib", "loky")  # where a launcher rejects its own settings


def _worker_died(error: BaseException) -> JobsLost | None:
    """joblib's TerminatedWorkerError anywhere in the chain: a worker was killed (SIGKILL, out of memory)."""
    seen: set[int] = set()
    chained: BaseException | None = error
    while chained is not None and id(chained) not in seen:
        seen.add(id(chained))
        kind = type(chained)
        if kind.__name__ == "TerminatedWorkerError" and kind.__module__.startswith(("joblib", "loky")):
            codes = re.search(r"exit codes? of the workers? (?:are|is) \{([^}]*)\}", str(chained))
            return JobsLost.worker_died(f"exit code {codes.group(1)}" if codes else "terminated")
        chained = chained.__cause__ or chained.__context__
    return None


def _raised_in(error: BaseException) -> str:
    """The module of the innermost frame that raised ``error``."""
    trace = error.__traceback__
    module = ""
    while trace is not None:
        module = str(trace.tb_frame.f_globals.get("__name__", ""))
        trace = trace.tb_next
    return module


def user_error_line(error: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for an error the user can fix or an expected failure; None for a bug."""
    root = _root(error)
    lost = _worker_died(error)
    if lost is not None:  # raised in joblib, yet a lost job, not a launcher refusing its settings
        return str(lost), lost.exit_code
    if isinstance(error, LrlabError):
        return _first_line(str(error)), error.exit_code
    if isinstance(root, ConfigError):
        return str(root), USAGE_EXIT
    if isinstance(root, OmegaConfBaseException):
        return _omegaconf_line(root), USAGE_EXIT
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and "/" not in error.missing_cfg_file:
        return f"--config-name {error.missing_cfg_file}: no such primary config (lrlab's is config)", USAGE_EXIT
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        options = ", ".join(error.options or [])
        return f"{group}={option} is not an option: {group} must be one of {options}", USAGE_EXIT
    if isinstance(error, OverrideParseException):  # "Error parsing override 'k=v'" + why, on one line
        lines = [line.strip() for line in str(error).splitlines() if line.strip() and "hydra.cc" not in line]
        key = str(getattr(error, "override", "") or "").split("=", 1)[0]
        line = ": ".join(lines[:2])
        return (line if not key or line.startswith(key) or f"'{key}=" in line else f"{key}: {line}"), USAGE_EXIT
    if isinstance(error, ConfigCompositionException):
        return _first_line(str(error)), USAGE_EXIT
    if type(error).__module__.startswith("mlflow"):  # the store or server answered with an error
        return f"tracking store: {_first_line(str(error))[:500]}", FAILURE_EXIT
    if isinstance(error, HydraException):  # e.g. --config-dir that does not exist
        return f"hydra: {_first_line(str(error))}", USAGE_EXIT
    if _raised_in(error).startswith("hydra.") and isinstance(error, (ValueError, TypeError, KeyError)):
        return f"override: Hydra cannot read it: {_first_line(str(error))}", USAGE_EXIT  # e.g. `=3`
    if _raised_in(error).startswith(LAUNCHER_MODULES):  # e.g. hydra.launcher.n_jobs=0
        return f"hydra.launcher: the launcher refused its settings: {type(error).__name__}: {error}", USAGE_EXIT
    if isinstance(error, OSError) and error.filename:  # the machine, not lrlab: a disk, a folder, a permission
        return f"{error.strerror or type(error).__name__}: {error.filename}", FAILURE_EXIT
    return None


def quiet_libraries() -> None:
    """No library chatter on the terminal: lrlab reports failures itself, in one line."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # the exception, not Hydra's multi-line report
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # it would print user:password@
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")  # MLflow sets its loggers' level when imported
    for name in ("urllib3", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # joblib's workers, stopped by an error, leave semaphores that the resource tracker (a process that
    # inherits this environment) reports at exit; they are cleaned up, the warning is noise.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")


class Redacting:
    """A console stream that writes URIs without their passwords, whoever prints them (Hydra's --cfg too)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(redact(text))

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)
