"""Run the repo's nginx/ tree with the real nginx binary, from a private prefix.

The tree is laid out like the official image's /etc/nginx: nginx.conf, mime.types,
snippets/ copied as they are, templates/*.template rendered into conf.d/ the way the
image's entrypoint does (envsubst of the defined NGINX_* variables only). nginx gets
its own pid, error log and temp paths, so it needs no root and no /var writes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NGINX_DIR = REPO / "nginx"
CERT_SCRIPT = NGINX_DIR / "docker-entrypoint.d" / "40-dev-certificate.sh"
SERVER_NAME = "localhost"
SYSTEM_MIME_TYPES = Path("/etc/nginx/mime.types")

# The contract's template variables, with the values the container uses.
CONTAINER_ENV = {
    "NGINX_SERVER_NAME": "localhost",
    "NGINX_UPSTREAM": "web:8000",
    "NGINX_HTTP_PORT": "80",
    "NGINX_HTTPS_PORT": "443",
    "NGINX_CERT_DIR": "/etc/nginx/certs",
    "NGINX_STATIC_ROOT": "/srv/static",
    "NGINX_ACME_ROOT": "/var/www/certbot",
}

_VARIABLE = re.compile(r"\$(?:\{(NGINX_\w+)\}|(NGINX_\w+))")


def render(template: str, env: dict[str, str]) -> str:
    """envsubst as the official image runs it: only variables that are defined are
    replaced ($NAME and ${NAME}); here additionally only NGINX_* names. Everything
    else, nginx's own $variables and undefined names, stays as written."""

    def substitute(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return env[name] if name in env else match.group(0)

    return _VARIABLE.sub(substitute, template)


def template_variables() -> set[str]:
    names = set()
    for template in NGINX_DIR.glob("templates/*.template"):
        for match in _VARIABLE.finditer(template.read_text()):
            names.add(match.group(1) or match.group(2))
    return names


def nginx_binary() -> str:
    # Debian installs it in /usr/sbin, which is not on a normal user's PATH.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("nginx is not installed: run scripts/install-servers.sh (make test does)")
    return found


def make_certificate(cert_dir: Path, server_name: str = SERVER_NAME) -> subprocess.CompletedProcess:
    """Run the image's real certificate hook."""
    env = {**os.environ, "NGINX_CERT_DIR": str(cert_dir), "NGINX_SERVER_NAME": server_name}
    return subprocess.run([str(CERT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


@dataclass
class NginxTree:
    prefix: Path
    env: dict[str, str]

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "logs" / "nginx.pid"

    def command(self, *args: str, directives: str = "") -> list[str]:
        """nginx with this prefix: -e (1.19.5+) keeps even start-up errors out of /var/log;
        -g (main-context directives, given once) adds the pid file and any `directives`."""
        return [
            nginx_binary(), "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", str(self.error_log),
            "-g", f"pid {self.pid_file}; {directives}".strip(), *args,
        ]

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=60)


# Temp paths are http-level directives (-g only takes main-level ones), so the test
# tree gets them from an extra conf.d file; nginx.conf itself is used unchanged.
_TEST_PATHS = """\
# Test-only: keep nginx's temp files inside the test prefix.
client_body_temp_path {p}/temp/client_body;
proxy_temp_path {p}/temp/proxy;
fastcgi_temp_path {p}/temp/fastcgi;
uwsgi_temp_path {p}/temp/uwsgi;
scgi_temp_path {p}/temp/scgi;
"""


def build_tree(prefix: Path, env: dict[str, str]) -> NginxTree:
    """Lay nginx/ out under prefix as the image does under /etc/nginx."""
    shutil.copy(NGINX_DIR / "nginx.conf", prefix / "nginx.conf")
    shutil.copytree(NGINX_DIR / "snippets", prefix / "snippets")
    # mime.types ships with nginx (Debian's package and the official image alike).
    shutil.copy(SYSTEM_MIME_TYPES, prefix / "mime.types")
    (prefix / "conf.d").mkdir()
    (prefix / "logs").mkdir()
    (prefix / "temp").mkdir()
    for template in sorted((NGINX_DIR / "templates").glob("*.template")):
        (prefix / "conf.d" / template.name.removesuffix(".template")).write_text(render(template.read_text(), env))
    (prefix / "conf.d" / "00-test-paths.conf").write_text(_TEST_PATHS.format(p=prefix))
    return NginxTree(prefix=prefix, env=env)


@contextlib.contextmanager
def world_readable_prefix() -> Iterator[Path]:
    """A fresh directory others can traverse: when the suite runs as root, nginx's workers
    drop to an unprivileged user that must still read static files and write temp files
    (pytest's own tmp dirs are 0700). Removed afterwards."""
    prefix = Path(tempfile.mkdtemp(prefix="nginx-test-"))
    try:
        prefix.chmod(0o755)
        yield prefix
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture
def nginx_prefix() -> Iterator[Path]:
    with world_readable_prefix() as prefix:
        yield prefix


def loopback_env(prefix: Path, *, upstream: str, http_port: int, https_port: int) -> dict[str, str]:
    """Template values for a test run: loopback listeners, dirs inside the prefix."""
    return {
        "NGINX_SERVER_NAME": SERVER_NAME,
        "NGINX_UPSTREAM": upstream,
        "NGINX_HTTP_PORT": f"127.0.0.1:{http_port}",
        "NGINX_HTTPS_PORT": f"127.0.0.1:{https_port}",
        "NGINX_CERT_DIR": str(prefix / "certs"),
        "NGINX_STATIC_ROOT": str(prefix / "static"),
        "NGINX_ACME_ROOT": str(prefix / "acme"),
    }
