"""A Compose project driven through the private engine, spoken to over HTTPS on 127.0.0.1."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import REPO
from .docker import DockerEngine, compose_binary
from .https import SERVER_NAME, Client, Response, tls_context

DEV_FILES = (REPO / "docker-compose.yml",)


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
    user: Client | None = None
    env_file: Path | None = None  # a server's .env, for its variables (Compose reads none from the repo)

    def compose_command(self, *args: str) -> list[str]:
        command = [compose_binary(), "--project-name", self.project]
        if self.env_file:
            command += ["--env-file", str(self.env_file)]
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

    @property
    def cookies(self) -> dict[str, str]:
        return self.user.cookies if self.user else {}

    def client(self, **options) -> Client:
        """A user agent for this stack, trusting its certificate, with cookies of its own."""
        if self.tls is None:
            self.trust_certificate()
        return Client(self.https_port, self.tls, SERVER_NAME, **options)

    def request(self, method: str, path: str, body=None, headers: dict | None = None, *, https: bool = True,
                timeout: float = 30) -> Response:
        """One request from the stack's own user (who keeps its cookies), over HTTPS or HTTP."""
        if self.user is None:
            self.user = self.client()
        self.user.timeout = timeout
        if https:
            return self.user.request(method, path, body, headers)
        plain = Client(self.http_port, None, SERVER_NAME, https=False, timeout=timeout, cookies=self.user.cookies)
        return plain.request(method, path, body, headers)

    def sql(self, statement: str) -> str:
        """A statement run by psql in the db container, answers unaligned (`a|b` per row)."""
        return self.compose("exec", "-T", "db", "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "flask",
                            "-d", "flask", "-c", statement).stdout.strip()

    def trust_certificate(self) -> None:
        """Trust exactly the certificate nginx serves (the one its entrypoint generated)."""
        cert = self.compose("exec", "-T", "nginx", "cat", "/etc/nginx/certs/fullchain.pem").stdout
        self.tls = tls_context(cadata=cert)

    def up(self) -> None:
        """`up --wait`; on failure, fail with compose's output and the services' last log lines."""
        up = self.compose("up", "--wait", "--wait-timeout", "300", *self.up_args, check=False, timeout=900)
        if up.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "60", check=False).stdout
            raise AssertionError(f"compose up failed ({up.returncode}):\n{up.stdout[-6000:]}\n{up.stderr[-6000:]}"
                                 f"\n--- logs ---\n{logs[-8000:]}")
        self.trust_certificate()

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "45", check=False)
