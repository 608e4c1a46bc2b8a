"""Helpers for the container tests: a Compose project driven through the private engine,
and an HTTP(S) client that only ever connects to 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.docker.engine import REPO, DockerEngine, compose_binary

SERVER_NAME = "localhost"  # NGINX_SERVER_NAME's default in docker-compose.yml
DEV_FILES = (REPO / "docker-compose.yml",)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)


class LoopbackHTTPSConnection(http.client.HTTPSConnection):
    """Connect to 127.0.0.1 while sending SNI and Host for the server's name: nginx refuses
    TLS handshakes whose SNI is not its server_name (ssl_reject_handshake)."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class LoopbackHTTPConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)


@dataclass
class Stack:
    engine: DockerEngine
    project: str
    env: dict[str, str]
    http_port: int
    https_port: int
    files: tuple[Path, ...] = DEV_FILES
    up_args: tuple[str, ...] = ("--build",)
    tls: ssl.SSLContext | None = None
    cookies: dict[str, str] = field(default_factory=dict)

    def compose_command(self, *args: str) -> list[str]:
        command = [compose_binary(), "--project-name", self.project]
        for file in self.files:
            command += ["--file", str(file)]
        return [*command, *args]

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        command = self.compose_command(*args)
        result = subprocess.run(command, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def container_id(self, service: str) -> str:
        return self.compose("ps", "--all", "--quiet", service).stdout.strip()

    def inspect(self, service: str, template: str) -> str:
        return self.engine.docker("inspect", "--format", template, self.container_id(service),
                                  capture=True).stdout.decode().strip()

    def request(self, method: str, path: str, body=None, headers: dict | None = None, *, https: bool = True,
                timeout: float = 30) -> Response:
        headers = dict(headers or {})
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if https:
            conn = LoopbackHTTPSConnection(SERVER_NAME, self.https_port, timeout=timeout, context=self.tls)
        else:
            conn = LoopbackHTTPConnection(SERVER_NAME, self.http_port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            response = Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response



    def up(self) -> None:
        """`up --wait`; on failure, fail with compose's output and the services' last log lines."""
        up = self.compose("up", "--wait", "--wait-timeout", "300", *self.up_args, check=False, timeout=900)
        if up.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "60", check=False).stdout
            raise AssertionError(f"compose up failed ({up.returncode}):\n{up.stdout[-6000:]}\n{up.stderr[-6000:]}"
                                 f"\n--- logs ---\n{logs[-8000:]}")
        # Trust exactly the development certificate nginx generated on first start.
        cert = self.compose("exec", "-T", "nginx", "cat", "/etc/nginx/certs/fullchain.pem").stdout
        self.tls = ssl.create_default_context(cadata=cert)

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "45", check=False)
