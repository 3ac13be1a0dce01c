"""A real ``mlflow server`` on 127.0.0.1 for the tests, optionally with basic auth; stopped with its workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

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
