"""The whole native stack as one unit: Postgres, Redis, Gunicorn running the real app, and nginx
terminating TLS in front, each a child process on loopback. Optionally a fault proxy sits
between the app and Postgres, so a drill can black-hole or cut the network where a signal to
the server does not fit.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from pathlib import Path

from . import REPO
from .faults import FaultProxy
from .https import Client
from .nginx import NginxServer
from .servers import GunicornServer, PostgresServer, RedisServer, migrate_to_head

DATABASE = "kit"


class NativeStack:
    def __init__(self, app_env: dict[str, str] | None = None, *, workers: int = 2,
                 gunicorn_config: Path = REPO / "gunicorn.conf.py", postgres_settings: dict[str, str] | None = None,
                 fault_proxy: bool = False, load_test: bool = False):
        self.app_env = app_env or {}
        self.workers = workers
        self.gunicorn_config = gunicorn_config
        self.load_test = load_test
        self.postgres = PostgresServer(postgres_settings)
        self.redis = RedisServer(Path(tempfile.mkdtemp(prefix="kit-redis-")), persistent=True)
        self.proxy: FaultProxy | None = FaultProxy(self.postgres.port) if fault_proxy else None
        self.gunicorn: GunicornServer | None = None
        self.nginx: NginxServer | None = None
        self._cleanup = contextlib.ExitStack()

    @property
    def database_url(self) -> str:
        """Where the app connects: through the fault proxy when there is one."""
        port = self.proxy.port if self.proxy else self.postgres.port
        return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"

    def start(self) -> NativeStack:
        try:
            self.postgres.start()
            self._cleanup.callback(self.postgres.close)
            migrate_to_head(self.postgres.create_database(DATABASE))
            self.redis.start()
            self._cleanup.callback(shutil.rmtree, self.redis.workdir, ignore_errors=True)
            self._cleanup.callback(self.redis.stop)
            if self.proxy:
                self.proxy.start()
                self._cleanup.callback(self.proxy.close)
            self.gunicorn = GunicornServer(self.environment(), config=self.gunicorn_config)
            self._cleanup.callback(self.gunicorn.close)
            self.gunicorn.start()
            self.nginx = NginxServer(self.gunicorn.port, load_test=self.load_test)
            self._cleanup.callback(self.nginx.close)
            self.nginx.start()
        except BaseException:
            self.close()
            raise
        return self

    def environment(self) -> dict[str, str]:
        """Production settings, one proxy hop (nginx), and whatever the caller changed."""
        return {
            "APP_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "PROXY_FIX_HOPS": "1",
            "WEB_CONCURRENCY": str(self.workers),
            "LOG_LEVEL": "WARNING",
            **self.app_env,
        }

    def client(self, **options) -> Client:
        """A user agent speaking HTTPS to nginx under the site's name."""
        return self.nginx.client(**options)

    def sql(self, statement: str) -> str:
        return self.postgres.psql(statement, DATABASE)

    def close(self) -> None:
        """Stop everything this stack started, in reverse order."""
        self._cleanup.close()

    def __enter__(self) -> NativeStack:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()
