"""Every signal lrlab can catch ends every run: a hangup as a SIGTERM, a second Ctrl-C as a shorter wait.

``make soak`` repeats each case LRLAB_SOAK times.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_record import LONG, SOAK, all_runs, cli, stored_epochs

pytestmark = pytest.mark.e2e


def jobs(runs: list) -> list:  # type: ignore[type-arg]
    return [r for r in runs if "lrlab.sweep" not in r.data.tags and "lrlab.group" not in r.data.tags]


@pytest.mark.soak
@pytest.mark.parametrize("attempt", SOAK)
@pytest.mark.parametrize(  # make test: a hangup; make soak adds a Ctrl-C half a second after it
    "second_after", [None, pytest.param(0.5, marks=pytest.mark.soak_only)], ids=["hangup", "hangup-then-ctrl-c"]
)
def test_a_hangup_ends_the_sweep_and_keeps_every_printed_epoch(
    tmp_path: Path, tracking_uri: str, attempt: int, second_after: float | None
) -> None:
    process = cli(tmp_path, tracking_uri, "-m", "lr=0.03,0.01", "seed=0,1", *LONG)
    assert process.stdout is not None
    printed = 0
    for line in process.stdout:  # wait until training is under way
        printed += line.startswith("epoch ")
        if line.startswith("epoch 5,"):
            break
    process.send_signal(signal.SIGHUP)
    if second_after is not None:
        time.sleep(second_after)
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)  # a guard against a hang, not a timing
    printed += len(re.findall(r"^epoch \d+,", out, re.M))
    assert process.returncode == 130, err
    assert "Traceback" not in err
    runs = all_runs(tracking_uri)
    assert runs and {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]
    assert printed <= stored_epochs(tracking_uri, jobs(runs))


@pytest.mark.soak
@pytest.mark.parametrize("attempt", SOAK)
@pytest.mark.parametrize(  # make test: half a second apart; make soak adds at once and 1.5 s apart
    "gap", [pytest.param(0.0, marks=pytest.mark.soak_only), 0.5, pytest.param(1.5, marks=pytest.mark.soak_only)]
)
def test_two_ctrl_c_still_end_the_parent_the_groups_and_the_jobs(
    tmp_path: Path, tracking_uri: str, attempt: int, gap: float
) -> None:
    process = cli(tmp_path, tracking_uri, "-m", "lr=0.03,0.01", "seed=0,1", *LONG)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("epoch 5,"):
            break
    process.send_signal(signal.SIGINT)
    time.sleep(gap)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    runs = all_runs(tracking_uri)
    assert len(runs) >= 4 and {r.info.status for r in runs} == {"KILLED"}, [
        (r.info.run_name, r.info.status) for r in runs
    ]
