"""scripts/docker-entrypoint.sh on the host: it waits (bounded) for the TCP ports named by
DATABASE_URL / REDIS_URL, names what it waited for when it gives up, then execs the command."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest

from harness import REPO
from harness.process import free_port

ENTRYPOINT = REPO / "scripts" / "docker-entrypoint.sh"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "WAIT_"))}
    return subprocess.run([str(ENTRYPOINT), *args], env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def test_execs_the_command_when_nothing_needs_waiting_for():
    # exec: the command replaces the script, so it keeps the script's PID (PID 1 in a container)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    proc = subprocess.Popen([str(ENTRYPOINT), "sh", "-c", 'echo "$$ $1|$2"', "sh", "a b", "c"],
                            stdout=subprocess.PIPE, text=True, env=env)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert output.strip() == f"{proc.pid} a b|c"


def test_without_a_command_prints_usage_and_exits_2():
    result = run()
    assert result.returncode == 2
    assert "Usage: docker-entrypoint.sh COMMAND" in result.stderr


def test_waits_for_a_port_that_opens_later():
    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def open_later():
        time.sleep(1.5)
        listener.bind(("127.0.0.1", port))
        listener.listen()

    opener = threading.Thread(target=open_later)
    opener.start()
    try:
        started = time.monotonic()
        result = run("true", env={"DATABASE_URL": f"postgresql://u:secret-pw@127.0.0.1:{port}/db"})
        waited = time.monotonic() - started
    finally:
        opener.join()
        listener.close()
    assert result.returncode == 0, result.stderr
    assert waited >= 1.0
    assert f"127.0.0.1:{port} (from DATABASE_URL) is accepting connections" in result.stdout
    assert "secret-pw" not in result.stdout + result.stderr


@pytest.mark.parametrize("variable, url", [
    ("DATABASE_URL", "postgresql://u:secret-pw@127.0.0.1:{port}/db"),
    ("REDIS_URL", "redis://:secret-pw@127.0.0.1:{port}/0"),
])
def test_gives_up_after_wait_timeout_naming_host_port_and_variable(variable, url):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    result = run("true", env={variable: url.format(port=port), "WAIT_TIMEOUT": "2"})
    assert result.returncode == 1
    assert time.monotonic() - started < 10
    assert f"127.0.0.1:{port} (from {variable}) did not accept connections within 2s" in result.stderr
    assert "secret-pw" not in result.stderr


def test_reads_the_url_from_a_file_secret(tmp_path):
    secret = tmp_path / "database_url"
    port = free_port()
    secret.write_text(f"postgresql://u:pw@127.0.0.1:{port}/db\n")
    result = run("true", env={"DATABASE_URL_FILE": str(secret), "WAIT_TIMEOUT": "1"})
    assert result.returncode == 1
    assert f"127.0.0.1:{port} (from DATABASE_URL)" in result.stderr


def test_skips_urls_without_a_tcp_host():
    result = run("true", env={"DATABASE_URL": "sqlite:////tmp/app.sqlite", "WAIT_TIMEOUT": "1"})
    assert result.returncode == 0, result.stderr


def test_rejects_a_non_numeric_wait_timeout():
    result = run("true", env={"WAIT_TIMEOUT": "soon"})
    assert result.returncode == 1
    assert "WAIT_TIMEOUT must be whole seconds" in result.stderr
