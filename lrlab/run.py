"""``python -m lrlab.run [key=value ...]`` runs once; ``-m key=a,b,c`` sweeps.

The entry point: Hydra composes the config, the callback in ``sweep.py`` validates it (and every job of a
sweep) before any run exists, and the runner runs the job. A user error is one line on stderr and exit 2;
an interrupt ends the running run and its sweep KILLED, exit 130.

The runner (MLflow, torch, matplotlib) is imported once a job runs, so that refusing bad input takes about
a second rather than four.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m lrlab.run: Ctrl-C is a stop request from the first line on
    from lrlab.sweep import interrupt as _interrupt

    _interrupt.install()

import sys

import hydra
from omegaconf import DictConfig

from lrlab.record.errors import LrlabError, StoreUnreachable, UsageError
from lrlab.record.redact import redact, redact_uri
from lrlab.record.store import bound_http_retries, is_server, resolve_tracking_uri, server_answers
from lrlab.sweep import interrupt
from lrlab.sweep.callback import Abort, end_cut_short
from lrlab.sweep.compose import CONF_DIR, is_group, register_configs
from lrlab.sweep.console import Redacting, quiet_libraries, user_error_line

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(dcfg: DictConfig) -> float:
    from lrlab.sweep.job import run_job

    return run_job(dcfg).final_loss


def _end_sweep_after(status: str, store_down: bool = False) -> None:
    """End a sweep that an error or an interrupt cut short; a store that is gone cannot be written."""
    try:
        end_cut_short(status, store_down)
    except Exception as error:  # the original error is what the user needs to read
        why = redact(str(error))[:200]
        print(f"lrlab: the sweep's parent run could not be ended {status}: {why}", file=sys.stderr)


def _refuse_before_hydra(argv: list[str]) -> None:
    """``experiment=null`` and the like: Hydra fails on them with a ValueError that names no key. And the
    callback that validates every job and keeps the sweep's record cannot be removed or replaced."""
    for argument in argv:
        key, _, value = argument.partition("=")
        group = key.lstrip("+~")
        if value == "null" and group and is_group(group):
            raise UsageError(
                f"{group}=null: a config group takes one of its options; leave {group} out for its default"
            )
        if group.startswith("hydra.callbacks"):
            raise UsageError(f"{group}: lrlab's callback validates every job and keeps the sweep's record; it stays")


def expand_replicates(argv: list[str]) -> list[str]:
    """``replicates=N``: shorthand for a sweep over ``seed=range(0,N)``, whose seeds are then grouped as
    replicates of each configuration (lrlab/sweep/groups.py). It turns the command into a sweep (``-m``)."""
    given = [a for a in argv if a.partition("=")[0] == "replicates"]
    if not given:
        return argv
    value = given[-1].partition("=")[2]
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"replicates={value} is not allowed: replicates must be a whole number of seeds >= 1")
    if [a for a in argv if a.partition("=")[0].lstrip("+~") == "seed"]:
        raise UsageError("replicates: give the seeds either as replicates=N or as seed=..., not both")
    rest = [a for a in argv if a.partition("=")[0] != "replicates"]
    multirun = [] if {"-m", "--multirun"} & set(rest) else ["-m"]
    return [*multirun, *rest, f"seed=range(0,{int(value)})"]


def _tracking_uri(argv: list[str]) -> str:
    """The tracking URI the command line asked for, as the runs resolve it."""
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("tracking_uri=")]
    return resolve_tracking_uri(given[-1] if given else None)


def main() -> None:
    sys.stdout, sys.stderr = Redacting(sys.stdout), Redacting(sys.stderr)
    quiet_libraries()
    interrupt.install()
    bound_http_retries()
    try:
        code = _main()
    except KeyboardInterrupt:  # a stop, or a second signal before the first one's ending took hold
        with interrupt.deferred():
            _end_sweep_after("KILLED")
            print(INTERRUPTED, file=sys.stderr)
        code = 130
    if code is not None:
        interrupt.exiting()
        sys.exit(code)


INTERRUPTED = "lrlab: interrupted: the running run and its sweep end KILLED (every epoch printed is stored)"


def _main() -> int | None:
    """Run Hydra's app; on an error, end the sweep (if one started) with signals held, say why, and return the
    exit code (an interrupt goes up to ``main``)."""
    try:
        try:
            _refuse_before_hydra(sys.argv[1:])
            sys.argv[1:] = expand_replicates(sys.argv[1:])
            hydra_main()
        except Abort as abort:  # raised by the callback, see errors.Abort
            raise abort.error from abort.error.__cause__
    except StoreUnreachable as down:
        with interrupt.deferred():
            _end_sweep_after("FAILED", store_down=True)
            print(f"lrlab: error: {down}", file=sys.stderr)
        return down.exit_code
    except Exception as error:
        with interrupt.deferred():
            return _fail(error)
    return None


def _fail(error: Exception) -> int:
    """End the sweep cut short by ``error`` and print why; the exit code."""
    if interrupt.stop_requested():  # a stop that reached a worker before its handler: still a stop
        _end_sweep_after("KILLED")
        print(INTERRUPTED, file=sys.stderr)
        return 130
    uri = _tracking_uri(sys.argv[1:])
    gone = not isinstance(error, LrlabError) and is_server(uri) and not server_answers(uri)
    if gone:  # whatever a launcher made of it (a refused URI is a LrlabError, reported as it is)
        _end_sweep_after("FAILED", store_down=True)
        print(f"lrlab: error: {StoreUnreachable.about(redact_uri(uri))}", file=sys.stderr)
        return StoreUnreachable.exit_code
    _end_sweep_after("FAILED")
    reported = user_error_line(error)
    if reported is None:
        raise error
    line, exit_code = reported
    print(f"lrlab: error: {redact(line)}", file=sys.stderr)
    return exit_code


if __name__ == "__main__":
    main()
