"""Runs whose process is gone, found and ended KILLED (docs/reliability.md#orphans): certain for a run of this host
(its pid and that process's start time, since pids get reused), a judgement from a stale heartbeat for another's."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import psutil

from lrlab.record.keys import shorten

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

HOST, PID, PID_STARTED, HEARTBEAT, ORPHANED = (
    "lrlab.host",
    "lrlab.pid",
    "lrlab.pid_started",
    "lrlab.heartbeat",
    "lrlab.orphaned",
)
HEARTBEAT_SECONDS = 60.0


def process_tags() -> dict[str, str]:
    """Where this process runs: host, pid and start time (seconds since the epoch)."""
    return {
        HOST: socket.gethostname(),
        PID: str(psutil.Process().pid),
        PID_STARTED: f"{psutil.Process().create_time():.2f}",
        HEARTBEAT: f"{time.time():.0f}",
    }


def is_alive(pid: int, started: float, within: float = 1.0) -> bool:
    """Whether process ``pid`` is the one that started at ``started`` (to ``within`` seconds): a pid that a
    new process took since is not alive. Run tags keep the start to the second; a live handle, exactly."""
    try:
        return abs(psutil.Process(pid).create_time() - started) < within
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def why_orphaned(run: Run, orphan_timeout: float, now: float | None = None) -> str | None:
    """Why a RUNNING run has no live process behind it, or None if it may still be running."""
    tags = run.data.tags
    if HOST not in tags or PID not in tags:
        return None
    host, pid = tags[HOST], int(tags[PID])
    if host == socket.gethostname():
        if is_alive(pid, float(tags.get(PID_STARTED, "0"))):
            return None
        return f"process {pid} on {host} is gone (found by pid {psutil.Process().pid})"
    beat = float(tags.get(HEARTBEAT, "nan"))
    age = (now or time.time()) - beat
    if age > orphan_timeout:  # False for a missing heartbeat (nan)
        return f"no heartbeat from {host} (pid {pid}) for {age:.0f} s > orphan_timeout {orphan_timeout:.0f} s"
    return None


def end_orphans(client: MlflowClient, experiment_id: str, orphan_timeout: float) -> list[Run]:
    """End every orphaned RUNNING run of the experiment KILLED, tagged ``lrlab.orphaned``; return them."""
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=10000)
    ended = []
    for run in running:
        reason = why_orphaned(run, orphan_timeout)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, ORPHANED, shorten(reason, 5000))
        client.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run)
    if ended:
        names = ", ".join(str(r.info.run_name or r.info.run_id) for r in ended[:5])
        more = f" and {len(ended) - 5} more" if len(ended) > 5 else ""
        print(
            f"lrlab: ended {len(ended)} orphaned run(s) KILLED (their process is gone; tag lrlab.orphaned): "
            f"{names}{more}",
            flush=True,
        )
    return ended
