"""How a failure reads on the terminal: one line for what the user can fix, a traceback only for bugs."""

from __future__ import annotations

import re

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from lrlab.config import ConfigError

USAGE_EXIT = 2  # the user's input was refused; nothing ran
FAILURE_EXIT = 1  # something ran and failed


class LrlabError(RuntimeError):
    """A failure that is reported as one line, with its own exit code."""

    exit_code = FAILURE_EXIT


class JobFailed(LrlabError):
    """A job (or some jobs of a sweep) ended FAILED for a reason other than divergence."""


class JobsLost(JobFailed):
    """Jobs of a sweep whose process died (SIGKILL, out of memory, a lost node) and so could not end their runs:
    the launcher reports them once every other job has ended, and the sweep ends their runs KILLED."""

    @classmethod
    def of(cls, lost: list[str]) -> JobsLost:
        return cls(
            f"{len(lost)} job(s) lost, their worker died: {'; '.join(lost)}. Their runs end KILLED; the same "
            "command with rerun=false runs only the jobs that did not finish"
        )


class StoreUnreachable(BaseException):
    """The tracking server stopped answering mid-run: every later job would fail the same way.

    A ``BaseException``, so that it passes through Hydra's job wrapper and the launcher stops launching;
    ``main`` prints it as one line and exits 1.
    """

    exit_code = FAILURE_EXIT

    @staticmethod
    def about(uri: str) -> str:
        """The one line for a server at ``uri`` (already without its password) that stopped answering."""
        return (
            f"the tracking server {uri} stopped answering; the runs it was writing stay RUNNING until lrlab next "
            "starts against it, which ends them KILLED (tag lrlab.orphaned)"
        )


class UsageError(LrlabError):
    """A refusal found outside the config schema (a tracking URI, a study name...)."""

    exit_code = USAGE_EXIT


class Abort(BaseException):
    """Carries an error out of a Hydra callback.

    Hydra turns an ``Exception`` raised in a callback into a warning and carries on launching jobs, so
    the callback wraps a refusal in this ``BaseException``, which Hydra lets through to ``main``.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


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
