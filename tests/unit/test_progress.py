"""Progress bars (lrlab/core/progress.py): off when stderr is not a terminal; on a terminal, shown and never in the way
of the epoch lines (each ``epoch N, loss`` line whole on its own line once the bars' carriage returns are applied)."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest

import lrlab
from lrlab.core import progress
from lrlab.core.engines import compiled

ROOT = Path(__file__).resolve().parents[2]
EPOCH_LINE = re.compile(r"^(\[[^\]]*\] )?epoch \d+, loss \S+$")
BAR = re.compile(r"\d+%\|")  # tqdm's "NN%|" with its bar after it


def _in_pty(code: str, *args: str, cwd: Path, env: dict[str, str], timeout: float = 240) -> str:
    """Run ``python -c code args`` with stdout and stderr on a pseudo-terminal; everything it wrote to the terminal."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 0x0 by default: an empty bar
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                process.kill()
                raise AssertionError(f"no output for {timeout}s; so far: {b''.join(chunks)!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        process.wait(timeout=60)
    text = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, text
    return text


def _screen_lines(text: str) -> list[str]:
    """Each line as the terminal leaves it, near enough: what follows its last carriage return (a bar's redraw), once
    the terminal's own ``\\r\\n`` line ends are plain ``\\n``; the clearing spaces a bar leaves stripped."""
    return [line.rpartition("\r")[2].rstrip() for line in text.replace("\r\n", "\n").split("\n")]


def _assert_epoch_lines_whole(text: str, expected: int) -> None:
    epoch_lines = [line for line in _screen_lines(text) if "epoch " in line and ", loss " in line]
    assert len(epoch_lines) == expected, text
    for line in epoch_lines:
        assert EPOCH_LINE.match(line), f"{line!r} is not a whole epoch line in {text!r}"


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db",
        "TERM": "xterm",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "PROGRESS_BAR_MIN_EXAMPLES", 1000)  # this run's epochs would get one on a tty
    cfg = lrlab.compose("engine=compiled", "dataset.num_examples=20000", "num_epochs=2")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        lrlab.train(cfg)
        with progress.bar(10, "jobs", "job", above=True) as jobs:
            assert not jobs.shown
            print("a line")  # stdout is left alone
            jobs.update(10)
    assert err.getvalue() == ""


def test_compiled_epochs_show_a_bar_on_a_terminal(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import lrlab
        from lrlab.core.engines import compiled
        compiled.PROGRESS_BAR_MIN_EXAMPLES = 1000
        compiled.WORK_PER_CALL = 2000  # many kernel calls an epoch: the bar moves
        cfg = lrlab.compose("engine=compiled", "dataset.num_examples=200000", "num_epochs=3")
        lrlab.train(cfg, lambda r: print(f"epoch {r.epoch}, loss {r.train_loss:f}", flush=True))
        """
    )
    text = _in_pty(code, cwd=tmp_path, env=_env(tmp_path))
    assert BAR.search(text) and "epoch 1:" in text, text  # tqdm's "epoch 1:  40%|████      | 80.0k/200k ..."
    _assert_epoch_lines_whole(text, 3)


def _sweep_in_pty(tmp_path: Path, *overrides: str) -> str:
    """``lrlab -m <overrides> num_epochs=2`` on a pseudo-terminal, its Hydra folders in ``tmp_path``: what it wrote."""
    code = "import sys; from lrlab.run import main; sys.argv[0] = 'lrlab'; main()"
    args = ["-m", *overrides, "num_epochs=2", f"hydra.sweep.dir={tmp_path}/multirun", f"hydra.run.dir={tmp_path}/run"]
    return _in_pty(code, *args, cwd=tmp_path, env=_env(tmp_path))


@pytest.mark.parametrize("launcher", ["basic", pytest.param("vectorized", marks=pytest.mark.soak_only)])
def test_a_sweep_shows_a_jobs_bar_on_a_terminal(tmp_path: Path, launcher: str) -> None:
    text = _sweep_in_pty(tmp_path, f"launcher={launcher}", "lr=0.01,0.03,0.1")
    assert re.search(r"jobs: +\d+%\|", text) and "3/3" in text, text
    _assert_epoch_lines_whole(text, 6)
    screen = _screen_lines(text)
    hydra_line = re.compile(r"^\[[^\]]+\]\[HYDRA\]\s+#2 : [^%]*lr=0\.1 num_epochs=2$")  # Hydra's lines whole too
    assert any(hydra_line.match(line) for line in screen), text


@pytest.mark.soak_only  # make soak: make test has the jobs bar, the same Bar
def test_an_optimising_sweep_shows_a_trials_bar_on_a_terminal(tmp_path: Path) -> None:
    text = _sweep_in_pty(tmp_path, "hydra/sweeper=optuna", "lr=interval(0.01,0.3)", "hydra.sweeper.n_trials=3")
    assert re.search(r"trials: +\d+%\|", text) and "3/3" in text, text
    _assert_epoch_lines_whole(text, 6)
    assert sum(line.startswith("trial ") and "COMPLETE" in line for line in _screen_lines(text)) == 3, text
