"""``python -m lrlab.run [key=value ...]`` runs once; ``-m key=a,b,c`` sweeps.

The entry point: Hydra composes the config, the callback in ``sweep.py`` validates it (and every job of a
sweep) before any run exists, and the runner runs the job. A user error is one line on stderr and exit 2;
an interrupt ends the running run and its sweep KILLED, exit 130.

The runner (MLflow, torch, matplotlib) is imported once a job runs, so that refusing bad input takes about
a second rather than four.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from lrlab import interrupt
from lrlab.config import CONF_DIR, register_configs
from lrlab.errors import Abort, StoreUnreachable, UsageError, user_error_line
from lrlab.names import redact
from lrlab.store import bound_http_retries
from lrlab.sweep import end_sweep

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(dcfg: DictConfig) -> float:
    from lrlab.runner import run_job

    return run_job(dcfg).final_loss


def _end_sweep_after(status: str, store_down: bool = False) -> None:
    """End a sweep that an error or an interrupt cut short; a store that is gone cannot be written."""
    try:
        end_sweep(status)
    except Exception as error:  # the original error is what the user needs to read
        if not store_down:
            why = redact(str(error))[:200]
            print(f"lrlab: the sweep's parent run could not be ended {status}: {why}", file=sys.stderr)


def quiet_libraries() -> None:
    """No library chatter on the terminal: lrlab reports failures itself, in one line."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # the exception, not Hydra's multi-line report
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # it would print user:password@
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # MLflow sets its loggers' level when imported
    for name in ("urllib3", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # joblib's workers, stopped by an error, leave semaphores that the resource tracker (a process that
    # inherits this environment) reports at exit; they are cleaned up, the warning is noise.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")


def _refuse_null_groups(argv: list[str]) -> None:
    """``experiment=null`` and the like: Hydra fails on them with a ValueError that names no key."""
    for argument in argv:
        key, _, value = argument.partition("=")
        group = key.lstrip("+~")
        if value == "null" and group and (CONF_DIR / group).is_dir():
            raise UsageError(
                f"{group}=null: a config group takes one of its options; leave {group} out for its default"
            )


def main() -> None:
    quiet_libraries()
    interrupt.install()
    bound_http_retries()
    try:
        try:
            _refuse_null_groups(sys.argv[1:])
            hydra_main()
        except Abort as abort:  # raised by the callback, see errors.Abort
            raise abort.error from abort.error.__cause__
    except StoreUnreachable as down:
        _end_sweep_after("FAILED", store_down=True)
        print(f"lrlab: error: {down}", file=sys.stderr)
        sys.exit(down.exit_code)
    except KeyboardInterrupt:
        _end_sweep_after("KILLED")
        print(
            "lrlab: interrupted: the running run and its sweep end KILLED (every epoch printed is stored)",
            file=sys.stderr,
        )
        sys.exit(130)
    except Exception as error:
        _end_sweep_after("FAILED")
        reported = user_error_line(error)
        if reported is None:
            raise
        line, exit_code = reported
        print(f"lrlab: error: {redact(line)}", file=sys.stderr)
        sys.exit(exit_code)


if __name__ == "__main__":
    main()
