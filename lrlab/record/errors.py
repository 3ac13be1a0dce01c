"""lrlab's own failures: each is reported as one line, with its exit code (see ``lrlab/sweep/console.py``)."""

from __future__ import annotations

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

    @classmethod
    def worker_died(cls, how: str) -> JobsLost:
        """A joblib worker died: joblib stops the whole pool, so every job running in it is lost."""
        return cls(
            f"a joblib worker died ({how}), which stops the pool: the jobs running in it are lost and their runs "
            "end KILLED (tag lrlab.orphaned); the same command with rerun=false runs only the jobs that did not finish"
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

    @staticmethod
    def gone(path: object) -> str:
        """The one line for a SQLite store that was deleted while a sweep wrote to it."""
        return f"the store {path} is gone (deleted while the sweep ran); lrlab does not make it again"


class UsageError(LrlabError):
    """A refusal found outside the config schema (a tracking URI, a study name...)."""

    exit_code = USAGE_EXIT
