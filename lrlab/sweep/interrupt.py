"""Ctrl-C and SIGTERM as a request: the handler records the stop and returns; the work checks for it.

Raising ``KeyboardInterrupt`` from a handler lands wherever the interpreter happens to be, and inside a
library's cleanup callback it is swallowed ("Exception ignored in ..."). So the first signal only sets a
flag that the training loop checks every step and the runner checks between jobs; the run then ends
``KILLED`` with everything it printed stored. A second signal forces the exit (``KeyboardInterrupt``),
and ``finally`` blocks still end the run.

A sweep's main process also passes the request on to its worker processes (joblib's loky workers ignore
the terminal's Ctrl-C), so that they stop their own runs the same way. Nothing here knows MLflow or Hydra.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import psutil

_stop: str | None = None  # why a stop was asked for, e.g. "SIGINT"
# Set in the environment by the first stop, so that a worker process started after it (a launcher may
# start its workers late, or replace one) hears of the stop as it starts.
STOP_ENV = "LRLAB_STOP_REQUESTED"
_installed_pid: int | None = None
_worker = False
_held = 0  # > 0 inside ``deferred()``: a second signal is recorded, not raised
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each a stop request; a hangup as a SIGTERM


def stop_requested() -> str | None:
    """Why a stop was asked for (the signal's name), or None."""
    return _stop


def _forward(signum: int) -> None:
    """Pass a stop on to this process's worker processes (they handle SIGTERM like this process)."""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # gone already
            child.send_signal(signal.SIGTERM)


def _handle(signum: int, frame: FrameType | None) -> None:
    global _stop
    name = signal.Signals(signum).name
    forced = _stop is not None
    _stop = _stop or name
    os.environ[STOP_ENV] = _stop
    if signum == signal.SIGHUP:  # the terminal is gone: a print to it would fail, so nothing more is printed
        _detach_terminal()
    _forward(signum)
    if forced and not _held:
        raise KeyboardInterrupt(f"{name} again: forced")


def _detach_terminal() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                os.dup2(devnull, fd)
    os.close(devnull)


def exiting() -> None:
    """The process is on its way out, its runs ended: a late Ctrl-C must not turn the exit into a traceback
    or a death by signal (Python puts the default handlers back while it shuts down, but not ignored ones)."""
    if _in_main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold forced stops for a block: the code that sets the runs' final statuses runs to its end however
    many signals come. It only writes to the store, so the store's own timeouts bound how long it takes."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1


def install(worker: bool = False) -> None:
    """Handle SIGINT, SIGTERM and SIGHUP in this process (once per process).

    A worker ignores SIGINT and SIGHUP, which the terminal sends to the whole process group: its main
    process forwards the stop as SIGTERM, so every worker hears about it once.

    Outside the main thread (Python allows handlers only there) it does nothing: signals stay the main thread's.
    """
    global _installed_pid, _worker, _stop
    if _installed_pid == os.getpid() or not _in_main_thread():
        return
    _installed_pid, _worker = os.getpid(), worker
    if worker and os.environ.get(STOP_ENV):
        _stop = os.environ[STOP_ENV]
    signal.signal(signal.SIGTERM, _handle)
    for terminal in (signal.SIGINT, signal.SIGHUP):  # the terminal's signals reach workers from the main process
        signal.signal(terminal, signal.SIG_IGN if worker else _handle)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def is_worker() -> bool:
    """Whether this process is a launcher's worker (its main process decides how the sweep ends)."""
    return _worker and is_installed_here()


def is_installed_here() -> bool:
    return _installed_pid == os.getpid()


@contextmanager
def handling() -> Iterator[None]:
    """Handle Ctrl-C and SIGTERM as stop requests for a block (the Python API's runs), then restore the
    handlers that were there (a notebook's, a REPL's) and forget the request. Outside the main thread it
    does nothing (see ``install``)."""
    global _stop, _installed_pid, _worker
    if not _in_main_thread():
        yield
        return
    handlers = {signum: signal.getsignal(signum) for signum in SIGNALS}
    saved = _installed_pid, _worker
    _stop, _installed_pid = None, None
    install()
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        _stop, (_installed_pid, _worker) = None, saved
        os.environ.pop(STOP_ENV, None)
