"""``python -m lrlab.tools.server`` (``make server``): one MLflow tracking server over a PostgreSQL cluster of its own.

What it does and promises is docs/server.md. The line above is ``--help``'s description."""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lrlab.record.errors import FAILURE_EXIT, LrlabError, UsageError
from lrlab.record.orphans import is_alive
from lrlab.record.redact import redact_uri

PG_BIN_ENV = "LRLAB_PG_BIN"  # a folder holding initdb, pg_ctl and postgres: the only place looked in when set
PG_TOOLS = ("initdb", "pg_ctl", "postgres")
PG_SEARCH = "/usr/lib/postgresql/*/bin"  # Debian's layout, newest version first
PG_USERS = ("postgres", "nobody")  # who runs PostgreSQL when lrlab.tools.server runs as root
ROLE, DATABASE = "lrlab", "mlflow"
SOCKET_NAME = ".s.PGSQL.5432"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with its terminating NUL
START_SECONDS = 180.0  # initdb, PostgreSQL and mlflow server's first migrations on a slow, busy machine
STOP_SECONDS = 30.0
LEFTOVERS = "children.json"  # the processes a running lrlab.tools.server started: stopped by the next start if it died


class SignalledToStop(BaseException):
    """SIGINT or SIGTERM: stop what was started, then exit 0."""


class ServerFailed(LrlabError):
    """PostgreSQL or mlflow server failed to start or died: one line, exit 1."""


def _on_signal(signum: int, frame: object) -> None:
    for each in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the stopping short
        signal.signal(each, signal.SIG_IGN)
    raise SignalledToStop(signal.Signals(signum).name)


# ---------------------------------------------------------------------------------------------- finding things


def find_pg_bin(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path | None:
    """The folder of PostgreSQL's server binaries: $LRLAB_PG_BIN alone when set, else PATH, else Debian's layout."""
    if PG_BIN_ENV in environ:
        candidates = [environ[PG_BIN_ENV]]
    else:
        on_path = shutil.which("initdb", path=environ.get("PATH", os.defpath))
        candidates = [str(Path(on_path).resolve().parent)] if on_path else []
        candidates += sorted(glob.glob(PG_SEARCH), key=_version, reverse=True)
    for folder in candidates:
        if all(os.access(Path(folder, tool), os.X_OK) for tool in PG_TOOLS):
            return Path(folder)
    return None


def _version(folder: str) -> tuple[int, ...]:
    parts = Path(folder).parent.name.split(".")
    return tuple(int(part) for part in parts if part.isdigit())


@dataclass(frozen=True)
class PgUser:
    """Who runs PostgreSQL: an unprivileged system user when we are root, else ourselves (``None`` ids)."""

    name: str
    uid: int | None = None
    gid: int | None = None

    def own(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def can_reach(self, folder: Path) -> bool:
        """Whether this user can open ``folder`` (every folder above it searchable), asked as that user."""
        if self.uid is None:
            return True
        test = shutil.which("test") or "/usr/bin/test"
        done = subprocess.run([test, "-x", str(folder)], check=False, user=self.uid, group=self.gid)
        return done.returncode == 0


def pg_user() -> PgUser:
    if os.geteuid() != 0:
        return PgUser(pwd.getpwuid(os.geteuid()).pw_name)
    for name in PG_USERS:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return PgUser(name, entry.pw_uid, entry.pw_gid)
    raise UsageError(f"user: PostgreSQL refuses to run as root and none of the users {', '.join(PG_USERS)} exists")


# ------------------------------------------------------------------------------------------------ bad input


def prepare_folder(folder: Path) -> Path:
    """``--dir``, created if missing, absolute; one line naming the key if it cannot hold a server."""
    folder = folder.expanduser().absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--dir {folder}: cannot create it ({error.strerror})") from None
    if not folder.is_dir():
        raise UsageError(f"--dir {folder}: not a folder")
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--dir {folder}: not writable ({error.strerror})") from None
    return folder


def check_port(host: str, port: int) -> None:
    """Refuse a port that another process listens on (SO_REUSEADDR, as uvicorn binds)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise UsageError(f"--host {host}: not an address of this machine ({error.strerror})") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"--port {port}: already in use on {host} (another server?); choose another: --port N "
                    "(make server PORT=N)"
                ) from None
            raise UsageError(f"--host {host}: cannot listen there ({error.strerror})") from None


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """One lrlab.tools.server per folder."""
    from filelock import FileLock, Timeout

    lock = FileLock(folder / "server.lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UsageError(f"--dir {folder}: another lrlab.tools.server is serving this folder; stop it first") from None
    try:
        yield
    finally:
        lock.release()


# ----------------------------------------------------------------------------------------------- processes


def _log(folder: Path, name: str) -> IO[bytes]:
    return (folder / name).open("ab")


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return "(no output)"


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a process group (a leader and everything it started), SIGKILL after STOP_SECONDS."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_SECONDS)
    _kill_group_rest(process.pid)


def _kill_group_rest(pgid: int) -> None:
    """Wait for every member of group ``pgid`` to go (workers outlive their leader by a moment); SIGKILL late ones."""
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class Cluster:
    """A PostgreSQL cluster in ``folder/pg``, listening only on a unix socket."""

    folder: Path
    bin: Path
    user: PgUser
    process: subprocess.Popen[bytes] | None = None
    socket_dir: Path | None = None
    _temporary_socket_dir: bool = False

    @property
    def data(self) -> Path:
        return self.folder / "pg"

    def _tool(self, name: str) -> str:
        return str(self.bin / name)

    def _as_user(self, command: list[str], what: str, timeout: float) -> None:
        with _log(self.folder, "pg.log") as log:
            done = subprocess.run(
                command,
                stdout=log,
                stderr=log,
                timeout=timeout,
                check=False,
                cwd="/",
                user=self.user.uid,
                group=self.user.gid,
            )
        if done.returncode != 0:
            raise ServerFailed(f"{what} failed (exit {done.returncode}): {_last_line(self.folder / 'pg.log')}")

    def create(self) -> bool:
        """initdb on first use, into a temporary folder renamed into place; False when the cluster exists."""
        if (self.data / "PG_VERSION").is_file():
            return False
        if self.data.exists():
            raise UsageError(f"--dir {self.folder}: {self.data} exists but is not a PostgreSQL cluster")
        if not self.user.can_reach(self.folder):
            raise UsageError(
                f"--dir {self.folder}: the user {self.user.name}, which runs PostgreSQL (it refuses root), cannot "
                "reach this folder: a folder above it is closed to other users; choose another --dir, or open "
                "them (chmod o+x)"
            )
        partial = self.folder / ".pg-creating"
        shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted first start
        partial.mkdir(mode=0o700)
        self.user.own(partial)
        command = [self._tool("initdb"), "-D", str(partial), "-U", ROLE, "--auth-local=trust"]
        command += ["--auth-host=reject", "--encoding=UTF8", "--no-locale", "--no-instructions"]
        try:
            self._as_user(command, "initdb", START_SECONDS)
            partial.rename(self.data)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return True

    def _choose_socket_dir(self) -> Path:
        inside = self.folder / "run"
        if len(str(inside / SOCKET_NAME)) <= MAX_SOCKET_PATH:
            inside.mkdir(mode=0o700, exist_ok=True)
            inside.chmod(0o700)
            self.user.own(inside)
            return inside
        short = Path(tempfile.mkdtemp(prefix="lrlab-sock-"))
        self.user.own(short)
        self._temporary_socket_dir = True
        return short

    def start(self) -> str:
        """Start PostgreSQL, create the database if missing; the backend store URI."""
        self.stop_leftover()
        self.socket_dir = self._choose_socket_dir()
        command = [self._tool("postgres"), "-D", str(self.data), "-k", str(self.socket_dir)]
        command += ["-c", "listen_addresses=", "-c", "unix_socket_permissions=0700"]
        with _log(self.folder, "pg.log") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=log,
                cwd="/",
                start_new_session=True,
                user=self.user.uid,
                group=self.user.gid,
            )
        self._create_database()
        return f"postgresql+psycopg2://{ROLE}@/{DATABASE}?host={self.socket_dir}"

    def _create_database(self) -> None:
        import psycopg2

        assert self.process is not None and self.socket_dir is not None
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise ServerFailed(f"PostgreSQL exited during start: {_last_line(self.folder / 'pg.log')}")
            try:
                connection = psycopg2.connect(dbname="postgres", user=ROLE, host=str(self.socket_dir))
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise ServerFailed(f"PostgreSQL did not accept connections within {START_SECONDS:.0f} s") from None
                time.sleep(0.05)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            connection.close()

    def stop_leftover(self) -> None:
        """A PostgreSQL still running on this cluster from a server that was killed (we hold the folder's lock)."""
        pid_file = self.data / "postmaster.pid"
        import psutil

        with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
            if psutil.Process(int(pid_file.read_text().split()[0])).name() != "postgres":
                return  # a stale file (PostgreSQL itself handles it) whose pid another process now has
            self._as_user([self._tool("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"], "pg_ctl", 60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            command = [self._tool("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"]
            command += ["-t", str(int(STOP_SECONDS))]
            with contextlib.suppress(ServerFailed, subprocess.TimeoutExpired):
                self._as_user(command, "pg_ctl stop", STOP_SECONDS + 5)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()  # SIGKILL to the postmaster: its backends end when they see it gone
                self.process.wait()
        if self.process is not None:
            _kill_group_rest(self.process.pid)
        if self._temporary_socket_dir and self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


@dataclass
class TrackingServer:
    """``mlflow server`` in a process group of its own, over ``backend``, artifacts in ``folder/artifacts``."""

    folder: Path
    backend: str
    host: str
    port: int
    workers: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend]
        command += ["--artifacts-destination", str(self.folder / "artifacts")]
        command += ["--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with _log(self.folder, "mlflow.log") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=log, cwd=self.folder, env=env, start_new_session=True
            )
        self._record()
        deadline = time.monotonic() + START_SECONDS
        while not self.answers():
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"mlflow server exited during start: {_last_line(self.folder / 'mlflow.log')} "
                    f"(the whole log: {self.folder / 'mlflow.log'})"
                )
            if time.monotonic() > deadline:
                raise ServerFailed(f"mlflow server did not answer within {START_SECONDS:.0f} s")
            time.sleep(0.2)

    def _record(self) -> None:
        """Its process group, for the next start in this folder should this lrlab.tools.server be killed outright."""
        import psutil

        assert self.process is not None
        with contextlib.suppress(psutil.Error):
            started = psutil.Process(self.process.pid).create_time()
            (self.folder / LEFTOVERS).write_text(json.dumps({"mlflow": [self.process.pid, started]}))

    def answers(self) -> bool:
        """Whether /health answers 200. Plain urllib: importing MLflow here would cost seconds at start and exit."""
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process)


def stop_leftovers(folder: Path) -> None:
    """The tracking server of a previous ``make server`` in ``folder`` that was killed outright: its group, stopped."""
    path = folder / LEFTOVERS
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        recorded = json.loads(path.read_text())
        pid, started = int(recorded["mlflow"][0]), float(recorded["mlflow"][1])
        if is_alive(pid, started, within=1e-3):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            _kill_group_rest(pid)
    path.unlink(missing_ok=True)


def _wait(processes: dict[str, subprocess.Popen[bytes] | None], folder: Path) -> None:
    """Until a signal (SignalledToStop) or until one of the processes exits (ServerFailed)."""
    while True:
        for name, process in processes.items():
            if process is not None and process.poll() is not None:
                log = folder / ("pg.log" if name == "PostgreSQL" else "mlflow.log")
                raise ServerFailed(f"{name} exited (code {process.returncode}): {_last_line(log)}")
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------------- the entry


def serve(folder: Path, host: str, port: int, workers: int) -> None:
    """Check, start, print the URI, wait for a signal; everything started is stopped on every path."""
    if not folder.exists():
        check_port(host, port)  # before creating a folder for nothing
    folder = prepare_folder(folder)
    with folder_lock(folder), contextlib.ExitStack() as started:
        stop_leftovers(folder)  # a server killed outright may hold the port still
        check_port(host, port)
        artifacts = folder / "artifacts"
        artifacts.mkdir(exist_ok=True)
        pg_bin = find_pg_bin()
        cluster: Cluster | None = None
        if pg_bin is None:
            from lrlab.record.store import check_store

            backend = f"sqlite:///{folder / 'mlflow.db'}"
            print(
                f"lrlab server: no PostgreSQL binaries ({', '.join(PG_TOOLS)}) in "
                + (f"${PG_BIN_ENV}={os.environ[PG_BIN_ENV]}" if PG_BIN_ENV in os.environ else f"PATH or {PG_SEARCH}")
                + f": serving the SQLite store {folder / 'mlflow.db'} instead",
                flush=True,
            )
            check_store(backend)  # a folder or another file in its place is refused; mlflow server creates it
        else:
            cluster = Cluster(folder, pg_bin, pg_user())
            started.callback(cluster.stop)
            cluster.create()
            backend = cluster.start()
        server = TrackingServer(folder, backend, host, port, workers)
        started.callback(server.stop)
        started.callback((folder / LEFTOVERS).unlink, missing_ok=True)
        server.start()
        print(
            f"lrlab server: MLFLOW_TRACKING_URI={server.uri} (backend {redact_uri(backend)}, artifacts {artifacts}, "
            f"logs {folder}/*.log; Ctrl-C stops it)",
            flush=True,
        )
        _wait({"mlflow server": server.process, "PostgreSQL": cluster.process if cluster else None}, folder)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lrlab.tools.server", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000, help="the tracking server's port (default 5000)")
    parser.add_argument("--dir", type=Path, default=Path(".lrlab/server"), help="cluster, artifacts, logs")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--workers", type=int, default=4, help="the tracking server's worker processes (default 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    try:
        if not 0 < args.port < 65536:
            raise UsageError(f"--port {args.port}: not a port (1 to 65535)")
        if args.workers < 1:
            raise UsageError(f"--workers {args.workers}: at least 1")
        serve(args.dir, args.host, args.port, args.workers)
    except SignalledToStop:
        return 0
    except LrlabError as error:
        print(f"lrlab server: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except OSError as error:  # the machine: a disk, a permission
        print(f"lrlab server: error: {error}", file=sys.stderr, flush=True)
        return FAILURE_EXIT
    finally:
        _reap_children()
    return 0  # pragma: no cover (serve returns only by raising)


def _reap_children() -> None:
    """A safety net: a child that a signal orphaned between its start and its record (inside Popen)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=STOP_SECONDS)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


if __name__ == "__main__":
    sys.exit(main())
