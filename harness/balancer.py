"""Debian's HAProxy as a TLS-terminating load balancer in front of nginx, on loopback: it ends
TLS, forwards plain HTTP to nginx's port 80 with X-Forwarded-For and X-Forwarded-Proto, and
health-checks nginx by address, the way managed balancers do (HTTP/1.0, no Host, no SNI).

Its connections to nginx leave from `source` (127.0.0.3 by default), so nginx can be told to
trust exactly that address (NGINX_TRUSTED_PROXIES) while the test's own clients are not.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from .nginx import world_readable_dir
from .process import find_binary, free_port, port_open, stop_process
from .wait import wait_for_server

CONFIG = """\
global
    stats socket {dir}/admin.sock mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 40s

frontend https
    bind 127.0.0.1:{port} ssl crt {dir}/site.pem
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend edge

backend edge
    # a target-group health check: by address, HTTP/1.0 without Host
    option httpchk GET {check_path}
    http-check expect status 200
    server nginx 127.0.0.1:{upstream_port} check inter 500ms fall 2 rise 1 source {source}
"""


class HaproxyServer:
    def __init__(self, upstream_port: int, cert: Path, key: Path, *, source: str = "127.0.0.3",
                 check_path: str = "/health/ready"):
        self.dir = world_readable_dir("haproxy-")
        self.port = free_port()
        (self.dir / "site.pem").write_bytes(cert.read_bytes() + key.read_bytes())
        self.config = self.dir / "haproxy.cfg"
        self.config.write_text(CONFIG.format(dir=self.dir, port=self.port, upstream_port=upstream_port,
                                             source=source, check_path=check_path))
        self.log = self.dir / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> HaproxyServer:
        with open(self.log, "ab") as log:
            # -db: stay in the foreground, so the Popen is the process to stop
            self.proc = subprocess.Popen([find_binary("haproxy"), "-db", "-f", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for_server(self.proc, lambda: port_open(self.port), 15, "haproxy listening", self.log)
        return self

    def command(self, line: str) -> str:
        """One command on HAProxy's runtime API (the stats socket)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.dir / "admin.sock"))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_status(self) -> str:
        """The nginx server's status as HAProxy's checks see it: UP, DOWN, ..."""
        for row in self.command("show stat").splitlines():
            fields = row.split(",")
            if fields[:2] == ["edge", "nginx"]:
                return fields[17]
        return ""

    def close(self) -> None:
        if self.proc:
            stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
