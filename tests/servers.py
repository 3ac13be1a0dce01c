"""A real ``mlflow server`` on 127.0.0.1 for the tests, optionally with basic auth; stopped with its workers.

``LrlabServer``: the server that ``make server`` runs (``python -m lrlab.tools.server``, over PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
ADMIN, ADMIN_PASSWORD = "admin", "s3cret-Admin-Pw-123"  # basic auth wants at least 12 characters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    folder: Path
    port: int
    auth: bool
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        command = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"]
        command += ["--artifacts-destination", str(self.folder / "artifacts")]
        if self.auth:
            ini = self.folder / "basic_auth.ini"
            ini.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = sqlite:///{self.folder / 'basic_auth.db'}\nadmin_username = {ADMIN}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env |= {
                "MLFLOW_AUTH_CONFIG_PATH": str(ini),
                "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "lrlab-test-secret",
            }
            command += ["--app-name", "basic-auth"]
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            command, cwd=self.folder, env=env, stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as answer:
                    answer.read()
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop the server and every worker it started (its whole process group)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
                time.sleep(0.1)
            except ProcessLookupError:
                break
        self.process = None


def server(folder: Path, auth: bool = False) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    return Server(folder, free_port(), auth).start()


URI_LINE = re.compile(r"MLFLOW_TRACKING_URI=(\S+) \(backend (\S+), artifacts")


@dataclass
class LrlabServer:
    """``make server`` (``python -m lrlab.tools.server``) in a subprocess: its printed URI, its stop by signal.

    ``stop`` sends the signal to the server process alone (it stops its own children, as on Ctrl-C); whatever
    it started and left behind is then killed, so a test that fails leaves nothing running.
    """

    folder: Path
    port: int
    env: dict[str, str] | None = None
    process: subprocess.Popen[str] | None = None
    uri: str = ""
    backend: str = ""
    output: list[str] = field(default_factory=list)
    _descendants: list[psutil.Process] = field(default_factory=list)

    def start(self, timeout: float = 120) -> LrlabServer:
        command = [sys.executable, "-m", "lrlab.tools.server", "--dir", str(self.folder), "--port", str(self.port)]
        self.output, self.uri, self.backend = [], "", ""
        self.process = subprocess.Popen(
            [*command, "--workers", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            match = next(filter(None, map(URI_LINE.search, self.output)), None)
            if match:
                self.uri, self.backend = match.group(1), match.group(2)
                self._descendants = psutil.Process(self.process.pid).children(recursive=True)
                return self
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"lrlab.tools.server did not start: {''.join(self.output)[-2000:]}")

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line)

    def descendants(self) -> list[psutil.Process]:
        """Every process the server has started (PostgreSQL and its backends, mlflow server and its workers)."""
        assert self.process is not None
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60) -> int | None:
        """Signal the server, wait for it (``timeout``), then kill anything it left; its exit code, None if it hung."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        with contextlib.suppress(psutil.Error):
            self._descendants += psutil.Process(process.pid).children(recursive=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
        try:
            code: int | None = process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for leftover in self._descendants:
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        psutil.wait_procs(self._descendants, timeout=10)
        return code


def reachable_folder(prefix: str) -> Path:
    """A new folder under the system's temporary folder that PostgreSQL's unprivileged user can reach.

    pytest's own ``tmp_path`` sits under /tmp/pytest-of-root (mode 0700), which that user cannot enter.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o711)
    return folder


def lrlab_server(folder: Path, env: dict[str, str] | None = None) -> LrlabServer:
    return LrlabServer(folder, free_port(), env).start()
