"""PostgreSQL, Redis and Gunicorn as real child processes on free loopback ports.

Each server is started from the local binaries, waited for by its observable state (a port,
pg_isready, /health), and stopped by its PID. `freeze()` and `thaw()` SIGSTOP and SIGCONT a
server: its kernel still accepts connections, but nothing answers, as with a partition.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import REPO, VENV_BIN
from .process import child_pids, find_binary, free_port, port_open, signal_tree, stop_process, stop_tree
from .wait import wait_for, wait_for_server


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

    @property
    def log(self) -> Path:
        return self.workdir / "postgres.log"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [find_binary("postgres"), "-D", str(self.datadir), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.workdir}",
                 # durability is irrelevant for a throwaway cluster; speed is not
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 *[arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")]],
                stdout=subprocess.DEVNULL, stderr=log, user=self.user,
            )
        wait_for_server(self.proc, self._accepts, 30, "postgres accepting connections", self.log)

    def _accepts(self) -> bool:
        result = subprocess.run(
            [find_binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True,
        )
        return result.returncode == 0

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": it disconnects clients instead of waiting for them.
        if self.proc:
            if self.proc.poll() is None:
                self.thaw()  # frozen backends could never act on the shutdown
            stop_process(self.proc, signal.SIGINT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the postmaster and its backends: connections hang instead of being refused."""
        stop_tree(self.proc.pid)

    def thaw(self) -> None:
        signal_tree(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [find_binary("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.database_url(database), "-c", sql],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return result.stdout.strip()

    def create_database(self, name: str, template: str = "template1") -> str:
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RedisServer:
    """`persistent` keeps data across a restart in an append-only file, as production's Redis
    does (sessions survive); otherwise nothing is written to disk."""

    def __init__(self, workdir: Path, persistent: bool = False):
        self.workdir = workdir
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.workdir / "redis.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [find_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "yes" if self.persistent else "no", "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_server(self.proc, lambda: port_open(self.port), 15, "redis listening", self.log)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)

    def freeze(self) -> None:
        stop_tree(self.proc.pid)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


# How production starts Gunicorn (the Dockerfile's command): gevent patches first.
GEVENT_LAUNCHER = ("-m", "gevent.monkey", "--module", "gunicorn")


class GunicornServer:
    """The real Gunicorn with the repo's gunicorn.conf.py, serving on a free loopback port,
    started as production starts it; another `config` (the bench's seed) as plain `gunicorn`."""

    def __init__(self, env: dict[str, str], app_module: str = "wsgi:app", cwd: Path = REPO,
                 config: Path = REPO / "gunicorn.conf.py"):
        self.port = free_port()
        self.logfile = Path(tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
        self.env = {
            **os.environ,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            # a port of its own: several servers run at once, and the default is one port
            "METRICS_PORT": str(free_port()),
            "WEB_CONCURRENCY": "1",
            **env,
        }
        self.app_module = app_module
        self.cwd = cwd
        self.config = config
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes it (METRICS_PORT, app/metrics.py)."""
        return f"http://127.0.0.1:{self.env['METRICS_PORT']}/metrics"

    @property
    def launcher(self) -> list[str]:
        if self.config.name == "gunicorn.conf.py":  # the repo's, or another checkout's (bench/ab.py)
            return [str(VENV_BIN / "python"), *GEVENT_LAUNCHER]
        return [str(VENV_BIN / "gunicorn")]

    def start(self, timeout: float = 30) -> None:
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.launcher, "--config", str(self.config), self.app_module],
                cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        # the log goes with close(): a failure keeps what it said
        wait_for_server(self.proc, self.healthy, timeout, "gunicorn answering /health", self.logfile)
        # One worker answering is not all of them: the master forks them one at a time, with a
        # random pause of up to 0.1 s between forks (Arbiter.spawn_workers).
        if "WEB_CONCURRENCY" in self.env:
            workers = int(self.env["WEB_CONCURRENCY"])
            wait_for(lambda: len(self.worker_pids()) == workers, timeout, f"{workers} gunicorn workers")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        return child_pids(self.proc.pid)

    def log_lines(self) -> list[str]:
        return self.logfile.read_text().splitlines()

    def stop(self) -> int:
        return stop_process(self.proc) if self.proc else 0

    def close(self) -> None:
        """Stop the server and delete its log."""
        self.stop()
        self.logfile.unlink(missing_ok=True)


@contextmanager
def migrated_postgres(settings: dict[str, str] | None = None,
                      database: str = "kit") -> Iterator[tuple[PostgresServer, str]]:
    """A Postgres server of the caller's own with one database at the migration head: what a
    test that stops or freezes the server needs, so that no other test is disturbed."""
    server = PostgresServer(settings)
    try:
        server.start()
        url = server.create_database(database)
        migrate_to_head(url)
        yield server, url
    finally:
        server.close()


def migrate_to_head(database_url: str) -> None:
    """Bring a database to the migration head, the way `flask db upgrade` does."""
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db

    app = create_app({"APP_ENV": "testing", "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        db.engine.dispose()


class RegistryServer:
    """Debian's docker-registry (the CNCF distribution registry) on a loopback port. Docker
    treats registries on 127.0.0.0/8 as insecure-allowed, so plain HTTP works unconfigured.
    Its blobs go under `storage` (default: the workdir's data/); a storage kept between runs
    makes a push send only the layers that changed."""

    def __init__(self, workdir: Path, storage: Path | None = None):
        self.workdir = workdir
        self.storage = storage or workdir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "registry.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {self.storage}\nhttp:\n  addr: {self.address}\n")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([find_binary("docker-registry"), "serve", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for_server(self.proc, lambda: port_open(self.port), 15, "the registry listening", self.log)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)


class SshServer:
    """OpenSSH's sshd on a loopback port, for one key the caller makes, as the root user the
    suite runs as. `environment` is set for every session (sshd's SetEnv), as a server's
    profile would set it."""

    def __init__(self, workdir: Path, authorized_key: str, environment: dict[str, str]):
        self.workdir = workdir
        self.port = free_port()
        self.authorized_key = authorized_key
        self.environment = environment
        self.proc: subprocess.Popen | None = None

    @property
    def host_key(self) -> Path:
        return self.workdir / "host_ed25519"

    @property
    def log(self) -> Path:
        return self.workdir / "sshd.log"

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {(self.workdir / 'host_ed25519.pub').read_text().strip()}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True)
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(self.authorized_key)
        authorized.chmod(0o600)
        settings = {
            "Port": self.port, "ListenAddress": "127.0.0.1", "HostKey": self.host_key,
            "AuthorizedKeysFile": authorized, "PidFile": self.workdir / "sshd.pid",
            "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no", "UsePAM": "no",
            "PermitRootLogin": "prohibit-password", "StrictModes": "no",
            # scp speaks SFTP since OpenSSH 9; Debian's packaged config has this line too
            "Subsystem": "sftp internal-sftp",
        }
        if self.environment:
            settings["SetEnv"] = " ".join(f'"{name}={value}"' for name, value in self.environment.items())
        config = self.workdir / "sshd_config"
        config.write_text("".join(f"{name} {value}\n" for name, value in settings.items()))
        # the privilege-separation directory sshd insists on, as Debian's service creates it
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([find_binary("sshd"), "-D", "-e", "-f", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for_server(self.proc, lambda: port_open(self.port), 15, "sshd listening", self.log)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
