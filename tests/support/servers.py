"""Real servers for the test suite: PostgreSQL, Redis and Gunicorn on free loopback ports.

Each server is a child process started from the local binaries and stopped by its PID.
"""

from __future__ import annotations

import glob
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_binary(name: str) -> str:
    """Find a server binary on PATH or in Debian's versioned PostgreSQL directory."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:
        raise RuntimeError(f"{name} is not installed: run scripts/install-servers.sh (make test does)")
    return found


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def child_pids(parent: int) -> list[int]:
    """Direct children of one process, from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    """Stop one child by its PID: the given signal first, SIGKILL if it outlives the timeout."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class PostgresServer:
    """A throwaway cluster. initdb refuses root, so as root the cluster belongs to `postgres`,
    in a directory of its own that user can reach (pytest's tmp dirs are private to root)."""

    def __init__(self, settings: dict[str, str] | None = None):
        self.settings = settings or {}
        self.workdir = Path(tempfile.mkdtemp(prefix="kit-postgres-"))
        self.workdir.chmod(0o755)
        self.datadir = self.workdir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.user = "postgres" if os.geteuid() == 0 else None
        self._initdb()

    def _initdb(self) -> None:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [find_binary("initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
             "--no-sync", "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True, user=self.user,
        )

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        with open(self.workdir / "postgres.log", "ab") as log:
            self.proc = subprocess.Popen(
                [find_binary("postgres"), "-D", str(self.datadir), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.workdir}",
                 # durability is irrelevant for a throwaway test cluster; speed is not
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 *[arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")]],
                stdout=subprocess.DEVNULL, stderr=log, user=self.user,
            )
        wait_for(lambda: self.proc.poll() is None and self._accepts(), 30, "postgres")

    def _accepts(self) -> bool:
        result = subprocess.run(
            [find_binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True,
        )
        return result.returncode == 0

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": it disconnects clients instead of waiting for them.
        if self.proc:
            stop_process(self.proc, signal.SIGINT)

    def freeze(self) -> None:
        """SIGSTOP the server and its backends: connections hang instead of being refused,
        as with a network partition or a paused container."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: int) -> None:
        for pid in [self.proc.pid, *child_pids(self.proc.pid)]:
            os.kill(pid, sig)

    @property
    def log(self) -> Path:
        return self.workdir / "postgres.log"

    def close(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [find_binary("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.database_url(database), "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return result.stdout.strip()

    def create_database(self, name: str, template: str = "template1") -> str:
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RedisServer:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [find_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self.proc.poll() is None and port_open(self.port), 15, "redis")

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)


class GunicornServer:
    """The real Gunicorn with the repo's gunicorn.conf.py, serving on a free loopback port."""

    def __init__(self, env: dict[str, str], app_module: str = "wsgi:app", cwd: Path = REPO):
        self.port = free_port()
        self.logfile = Path(tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
        self.env = {
            **os.environ,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "1",
            **env,
        }
        self.app_module = app_module
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "gunicorn"), "--config", str(REPO / "gunicorn.conf.py"), self.app_module],
                cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self.proc.poll() is None and self._healthy(), 30, f"gunicorn ({self.logfile})")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def log_lines(self) -> list[str]:
        return self.logfile.read_text().splitlines()

    def stop(self) -> int:
        return stop_process(self.proc) if self.proc else 0

    def close(self) -> None:
        """Stop the server and delete its log."""
        self.stop()
        self.logfile.unlink(missing_ok=True)
