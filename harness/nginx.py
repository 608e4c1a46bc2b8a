"""The repo's nginx/ tree run by the real nginx binary from a private prefix.

The tree is laid out like the official image's /etc/nginx: nginx.conf, mime.types, snippets/
as they are, templates/*.template rendered into conf.d/ the way the image's entrypoint does
(envsubst of the defined NGINX_* variables only). nginx gets its own pid, error log and temp
paths, so it needs no /var writes; it runs in the foreground and is stopped by its PID.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import REPO
from .https import SERVER_NAME, Client, tls_context
from .process import find_binary, free_port, port_open, stop_process
from .wait import wait_for_server

NGINX_DIR = REPO / "nginx"
CERT_SCRIPT = NGINX_DIR / "docker-entrypoint.d" / "40-dev-certificate.sh"
UPSTREAM_SCRIPT = NGINX_DIR / "docker-entrypoint.d" / "30-upstream.sh"
TRUSTED_PROXIES_SCRIPT = NGINX_DIR / "docker-entrypoint.d" / "35-trusted-proxies.sh"
# What `load_test` sets instead of the shipped per-address limits (10r/s, burst 20, 64). The
# burst too: nginx counts in milliseconds, and a load generator's clients firing on the same
# tick otherwise get 429s at any rate (hey at 300/s got 6-8 %).
LOAD_TEST_LIMITS = {"NGINX_API_RATE": "1000000r/s", "NGINX_API_BURST": "100000", "NGINX_CONN_LIMIT": "65535"}
SYSTEM_MIME_TYPES = Path("/etc/nginx/mime.types")
_VARIABLE = re.compile(r"\$(?:\{(NGINX_\w+)\}|(NGINX_\w+))")

# Test-only: temp paths are http-level directives (-g takes only main-level ones), so the
# tree gets them from an extra conf.d file and nginx.conf itself is used unchanged.
_TEMP_PATHS = """\
client_body_temp_path {p}/temp/client_body;
proxy_temp_path {p}/temp/proxy;
fastcgi_temp_path {p}/temp/fastcgi;
uwsgi_temp_path {p}/temp/uwsgi;
scgi_temp_path {p}/temp/scgi;
"""


def render(template: str, env: dict[str, str]) -> str:
    """envsubst as the official image runs it: only defined variables are replaced ($NAME and
    ${NAME}), and here only NGINX_* names; nginx's own $variables stay as written."""

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


def make_certificate(cert_dir: Path, server_name: str = SERVER_NAME) -> subprocess.CompletedProcess:
    """Run the image's real self-signed certificate hook."""
    env = {**os.environ, "NGINX_CERT_DIR": str(cert_dir), "NGINX_SERVER_NAME": server_name}
    return subprocess.run([str(CERT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def write_upstream(prefix: Path, upstream: str, resolver: str = "", path: str | None = None
                   ) -> subprocess.CompletedProcess:
    """Run the image's real upstream hook: upstream.d/web.conf under the prefix. `path` is
    the PATH it runs with (where it finds `nginx`)."""
    env = {**os.environ, "NGINX_UPSTREAM": upstream, "NGINX_UPSTREAM_RESOLVER": resolver,
           "NGINX_UPSTREAM_DIR": str(prefix / "upstream.d"), **({"PATH": path} if path else {})}
    return subprocess.run([str(UPSTREAM_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def write_trusted_proxies(conf_d: Path, ranges: str) -> subprocess.CompletedProcess:
    """Run the image's real trusted-proxies hook: conf.d/trusted-proxies.conf."""
    env = {**os.environ, "NGINX_TRUSTED_PROXIES": ranges, "NGINX_CONF_D": str(conf_d)}
    return subprocess.run([str(TRUSTED_PROXIES_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def loopback_env(prefix: Path, *, http_port: int, https_port: int, status_port: int | None = None) -> dict[str, str]:
    """Template values for a loopback run: listeners on 127.0.0.1, directories inside the prefix,
    the shipped per-address limits."""
    return {
        "NGINX_SERVER_NAME": SERVER_NAME,
        "NGINX_API_RATE": "10r/s",
        "NGINX_API_BURST": "20",
        "NGINX_CONN_LIMIT": "64",
        "NGINX_HTTP_PORT": f"127.0.0.1:{http_port}",
        "NGINX_HTTPS_PORT": f"127.0.0.1:{https_port}",
        "NGINX_STATUS_PORT": f"127.0.0.1:{status_port or free_port()}",
        "NGINX_CERT_DIR": str(prefix / "certs"),
        "NGINX_STATIC_ROOT": str(prefix / "static"),
        "NGINX_ACME_ROOT": str(prefix / "acme"),
    }


def world_readable_dir(prefix: str = "nginx-") -> Path:
    """A fresh directory others can traverse: as root, nginx's workers drop to an unprivileged
    user that must still read static files and write temp files (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def write_file(path: Path, text: str) -> None:
    """Create a file, and its directories, readable by nginx's unprivileged workers."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.write_text(text)
    path.chmod(0o644)


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
            find_binary("nginx"), "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", str(self.error_log),
            "-g", f"pid {self.pid_file}; {directives}".strip(), *args,
        ]

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=60)


def build_tree(prefix: Path, env: dict[str, str]) -> NginxTree:
    """Lay nginx/ out under prefix as the image does under /etc/nginx (NGINX_TRUSTED_PROXIES in
    `env` is the trusted-proxies hook's)."""
    shutil.copy(NGINX_DIR / "nginx.conf", prefix / "nginx.conf")
    shutil.copytree(NGINX_DIR / "snippets", prefix / "snippets")
    # mime.types ships with nginx (Debian's package and the official image alike).
    shutil.copy(SYSTEM_MIME_TYPES, prefix / "mime.types")
    for name in ("conf.d", "logs", "temp"):
        (prefix / name).mkdir()
    for template in sorted((NGINX_DIR / "templates").glob("*.template")):
        (prefix / "conf.d" / template.name.removesuffix(".template")).write_text(render(template.read_text(), env))
    (prefix / "conf.d" / "00-test-paths.conf").write_text(_TEMP_PATHS.format(p=prefix))
    # the image's hook that runs after the templates are rendered, as its entrypoint runs it
    trusted = write_trusted_proxies(prefix / "conf.d", env.get("NGINX_TRUSTED_PROXIES", ""))
    if trusted.returncode != 0:
        raise RuntimeError(f"an image hook failed: {trusted.stderr}")
    return NginxTree(prefix=prefix, env=env)


class NginxServer:
    """The repo's nginx in the foreground (daemon off, so the Popen is the master), terminating
    TLS with the image's own development certificate and proxying to 127.0.0.1:upstream_port."""

    def __init__(self, upstream_port: int, *, load_test: bool = False, trusted_proxies: str = "",
                 other_upstreams: tuple[str, ...] = ()):
        """`load_test` lifts the per-address limits (the /api/ rate, requests in progress), for
        load from one address; `trusted_proxies` is NGINX_TRUSTED_PROXIES; `other_upstreams`
        (host:port) are listed before 127.0.0.1:upstream_port."""
        self.prefix = world_readable_dir()
        self.http_port, self.https_port, self.status_port = free_port(), free_port(), free_port()
        env = loopback_env(self.prefix, http_port=self.http_port, https_port=self.https_port,
                           status_port=self.status_port)
        if load_test:
            env.update(LOAD_TEST_LIMITS)
        upstreams = " ".join((*other_upstreams, f"127.0.0.1:{upstream_port}"))
        hooks = (make_certificate(self.prefix / "certs"), write_upstream(self.prefix, upstreams))
        for result in hooks:
            if result.returncode != 0:
                raise RuntimeError(f"an image hook failed: {result.stderr}")
        write_file(self.prefix / "static" / "robots.txt", "User-agent: *\nDisallow:\n")
        write_file(self.prefix / "acme" / ".well-known" / "acme-challenge" / "token-123", "token-123.thumbprint")
        env["NGINX_TRUSTED_PROXIES"] = trusted_proxies
        self.tree = build_tree(self.prefix, env)
        self.proc: subprocess.Popen | None = None

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def stderr_log(self) -> Path:
        return self.prefix / "logs" / "stderr.log"

    @property
    def status_url(self) -> str:
        """stub_status, on the internal listener."""
        return f"http://127.0.0.1:{self.status_port}/stub_status"

    @property
    def cafile(self) -> str:
        return str(self.prefix / "certs" / "fullchain.pem")

    def start(self) -> None:
        # nginx.conf logs access to /dev/stdout and errors to stderr
        with open(self.access_log, "ab") as stdout, open(self.stderr_log, "ab") as stderr:
            self.proc = subprocess.Popen(self.tree.command(directives="daemon off;"), stdout=stdout, stderr=stderr)
        wait_for_server(self.proc, lambda: port_open(self.https_port) and port_open(self.http_port), 15,
                        "nginx listening", self.stderr_log)

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; old workers finish their requests, then exit."""
        self.proc.send_signal(signal.SIGHUP)

    def client(self, **options) -> Client:
        return Client(self.https_port, tls_context(self.cafile), **options)

    def stop(self) -> None:
        # SIGTERM is nginx's fast shutdown: the master stops its workers, then exits.
        if self.proc:
            stop_process(self.proc, signal.SIGTERM)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)
