"""The real Gunicorn, with gunicorn.conf.py and gevent workers, against real Postgres and Redis."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.cookiejar import CookieJar
from pathlib import Path

import gevent
import pytest
from gevent import socket as gevent_socket
from gevent.server import StreamServer

from app.gunicorn_worker import DrainingListener
from harness import REPO, VENV_BIN
from harness.servers import GEVENT_LAUNCHER, migrated_postgres
from harness.wait import wait_for

pytestmark = pytest.mark.slow


def get(url: str, headers: dict | None = None, timeout: float = 10, opener=None):
    """(status, headers, body) for any status, 5xx included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_until_ready(server, within: float) -> None:
    """Poll readiness until it passes; a bound on recovery, not a timing."""
    wait_for(lambda: get(f"{server.url}/health/ready")[0] == 200, within, "readiness passing", interval=0.1)


def post_json(opener, url: str, payload: dict):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_gevent_worker_serves_health_while_a_slow_query_runs(start_gunicorn, app_env, postgres_server):
    server = start_gunicorn({**app_env, "WEB_CONCURRENCY": "1"}, app_module="tests.support.testing_wsgi:app")
    slow = {}

    def slow_request():
        slow["status"] = get(f"{server.url}/_test/slow-query?seconds=3")[0]

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_for(lambda: "pg_sleep" in postgres_server.psql("SELECT string_agg(query, ' ') FROM pg_stat_activity "
                                                        "WHERE state = 'active'"), 5, "the slow query in Postgres")
    status = get(f"{server.url}/health")[0]
    slow_still_running = thread.is_alive()
    thread.join(15)

    assert "Using worker: app.gunicorn_worker.DrainingGeventWorker" in "\n".join(server.log_lines())
    assert status == 200
    assert slow_still_running, "/health waited for the slow query: the worker was blocked"
    assert slow["status"] == 200


def test_every_log_line_is_json_and_access_lines_carry_the_request_id(start_gunicorn, app_env):
    server = start_gunicorn(app_env)

    get(f"{server.url}/api/auth/me", headers={"X-Request-ID": "trace-me-123", "User-Agent": 'x", "level": "ERROR'})
    get(f"{server.url}/health/ready")
    server.stop()

    records = [json.loads(line) for line in server.log_lines()]  # raises on any non-JSON line
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    assert [r["path"] for r in access] == ["/api/auth/me"], "health polls must not be logged at INFO"
    (line,) = access
    assert line["request_id"] == "trace-me-123"
    assert line["status"] == 401 and line["method"] == "GET" and line["remote_addr"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float)
    assert line["timestamp"].endswith("+00:00") and line["level"] == "INFO"
    assert line["user_agent"] == 'x", "level": "ERROR'  # a quote in a header forges no field


def data_segments_received(client: socket.socket) -> int:
    """Linux's count of segments that brought data to this socket (struct tcp_info's
    tcpi_data_segs_in, at byte 152)."""
    return struct.unpack_from("I", client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 152)[0]


def test_each_response_leaves_gunicorn_in_one_segment(start_gunicorn, app_env):
    """Headers and body together (app/middleware.py OneSegmentResponses), where Gunicorn alone
    sends them as two segments."""
    server = start_gunicorn(app_env)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # kept alive throughout
    connection.connect()
    try:
        for path in ("/health", "/api/notes", "/health/ready"):  # the liveness answer, Flask's 401, readiness
            before = data_segments_received(connection.sock)
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()

            assert response.status in (200, 401), (path, response.status)
            assert data_segments_received(connection.sock) - before == 1, path
    finally:
        connection.close()


@pytest.mark.parametrize("change, line", [
    ({"SECRET_KEY": "too-short"}, "configuration error: SECRET_KEY is too short: use at least 32 random characters "
                                  "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"),
    ({"DATABASE_URL": "mysql://kit:pw@db/kit"}, "configuration error: DATABASE_URL has the unsupported scheme "
                                                "'mysql': use postgresql:// (or sqlite:// outside production)"),
])
@pytest.mark.parametrize("launcher", [[str(VENV_BIN / "python"), *GEVENT_LAUNCHER], [str(VENV_BIN / "gunicorn")]],
                         ids=["gevent launcher (preloads)", "plain gunicorn"])
def test_a_bad_configuration_exits_4_with_one_line_every_time(app_env, change, line, launcher):
    """Checked once, in the master, before any worker starts: earlier, two workers failing
    at once sometimes ended in a HaltServer traceback and exit 1, and printed the line twice."""
    env = {**app_env, "APP_ENV": "production", "SECRET_KEY": "k3Vq9x-2LrT8pZ0wYb6NcJ4hFm1sUe7aGd5QoXiR",
           "GUNICORN_BIND": "127.0.0.1:0", "WEB_CONCURRENCY": "2", "PATH": "/usr/bin:/bin", **change}
    for _ in range(3):
        result = subprocess.run([*launcher, "--config", "gunicorn.conf.py", "wsgi:app"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

        assert result.returncode == 4
        assert [text for text in (result.stdout + result.stderr).splitlines() if not text.startswith("{")] == [line]
        assert "Booting worker" not in result.stdout


def remote_ports(pid: int) -> set[int]:
    """The remote TCP ports of a process's sockets (from /proc: its fds' inodes in net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            ports.add(int(fields[2].split(":")[1], 16))
    return ports


def test_the_master_preloads_the_app_and_holds_no_connection(start_gunicorn, app_env, postgres_server,
                                                              redis_server):
    """Workers fork from a master that loaded the app (the production launcher); a connection
    opened there would be shared by every worker, so the master must never open one."""
    server = start_gunicorn({**app_env, "WEB_CONCURRENCY": "2"})
    for _ in range(20):
        assert get(f"{server.url}/health/ready")[0] == 200

    workers = server.worker_pids()
    assert len(workers) == 2
    assert postgres_server.port in set().union(*map(remote_ports, workers))  # they did connect
    assert {postgres_server.port, redis_server.port} & remote_ports(server.proc.pid) == set()
    # preloaded: the master imported the app, psycopg2's C extension with it (an unpreloaded
    # master never loads it)
    assert "_psycopg" in Path(f"/proc/{server.proc.pid}/maps").read_text()


def test_a_worker_freezes_what_it_holds_once_it_has_the_app(app_env):
    """post_worker_init's gc.freeze: the objects a worker holds leave the collector's reach (in
    a process of its own: the hook freezes whatever the process holds)."""
    hook = ("import gc, runpy; settings = runpy.run_path('gunicorn.conf.py'); from app import create_app; "
            "create_app(); before = gc.get_freeze_count(); settings['post_worker_init'](None); "
            "print(before, gc.get_freeze_count())")
    result = subprocess.run([sys.executable, "-c", hook], cwd=REPO, env={**os.environ, **app_env},
                            capture_output=True, text=True, timeout=60, check=True)

    before, after = map(int, result.stdout.split())
    assert before == 0 and after > 10_000  # the app, SQLAlchemy and Flask: tens of thousands


def test_flask_cli_refuses_a_weak_secret_key_in_one_line(app_env):
    env = {**app_env, "APP_ENV": "production", "SECRET_KEY": "changeme" * 5}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert result.stderr.strip() == "configuration error: SECRET_KEY is a placeholder value: generate a random one"


@pytest.fixture
def own_postgres():
    """A server of this test's own, so stopping it disturbs no other test."""
    with migrated_postgres() as server_and_url:
        yield server_and_url


def test_postgres_outage_and_recovery_without_restart(start_gunicorn, own_postgres, redis_url):
    postgres, database_url = own_postgres
    server = start_gunicorn({"APP_ENV": "testing", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                             "WEB_CONCURRENCY": "2", "HEALTH_CACHE_TTL": "0"})
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    credentials = {"email": "ada@example.com", "password": "correct horse battery"}
    assert post_json(opener, f"{server.url}/api/auth/register", credentials) == 201
    assert post_json(opener, f"{server.url}/api/auth/login", credentials) == 200
    assert get(f"{server.url}/health/ready")[0] == 200

    postgres.stop()
    # the readiness bound: an answer within 2 s, or urllib raises
    ready_status, _, ready_body = get(f"{server.url}/health/ready", timeout=2)
    health_status = get(f"{server.url}/health", timeout=2)[0]
    data_status, data_headers, data_body = get(f"{server.url}/api/notes", opener=opener)

    assert health_status == 200
    assert ready_status == 503
    assert json.loads(ready_body)["checks"]["postgres:responseTime"][0]["status"] == "fail"
    assert data_status == 503 and data_headers["Retry-After"] == "5"
    assert json.loads(data_body)["error"]["code"] == "service_unavailable"

    postgres.start()
    wait_until_ready(server, within=5)
    assert get(f"{server.url}/api/notes", opener=opener)[0] == 200


def test_a_hung_database_fails_readiness_at_the_check_timeout(start_gunicorn, own_postgres, redis_url):
    """Postgres frozen, not down: connections hang, and only the per-check timeout
    (HEALTH_CHECK_TIMEOUT, 1 s) bounds the answer."""
    postgres, database_url = own_postgres
    server = start_gunicorn({"APP_ENV": "testing", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                             "WEB_CONCURRENCY": "1", "HEALTH_CACHE_TTL": "0"})
    assert get(f"{server.url}/health/ready")[0] == 200

    postgres.freeze()
    try:
        # bounds on timeouts, not timings: either answer must come back before urllib gives up
        ready_status, _, ready_body = get(f"{server.url}/health/ready", timeout=2.5)
        health_status = get(f"{server.url}/health", timeout=1)[0]
    finally:
        postgres.thaw()

    assert health_status == 200
    assert ready_status == 503
    checks = json.loads(ready_body)["checks"]
    assert checks["postgres:responseTime"][0]["output"] == "timed out after 1 s"
    assert checks["redis:responseTime"][0]["status"] == "pass"
    wait_until_ready(server, within=5)


def register_and_login(server) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    credentials = {"email": "ada@example.com", "password": "correct horse battery"}
    assert post_json(opener, f"{server.url}/api/auth/register", credentials) in (201, 409)
    assert post_json(opener, f"{server.url}/api/auth/login", credentials) == 200
    return opener


def timed_get(url: str, opener, timeout: float):
    started = time.monotonic()
    status = get(url, opener=opener, timeout=timeout)[0]
    return status, time.monotonic() - started


def test_gevent_requests_on_a_frozen_database_end_at_the_deadline(start_gunicorn, own_postgres, redis_url):
    """Under gevent, with pooled connections and with none (a fresh worker's first request):
    503 by DB_REQUEST_TIMEOUT (or DB_CONNECT_TIMEOUT), never a hang, never a WORKER TIMEOUT."""
    postgres, database_url = own_postgres
    env = {"APP_ENV": "testing", "DATABASE_URL": database_url, "REDIS_URL": redis_url, "WEB_CONCURRENCY": "1",
           "DB_REQUEST_TIMEOUT": "2", "DB_CONNECT_TIMEOUT": "2"}
    warm = start_gunicorn(env)
    opener = register_and_login(warm)
    assert get(f"{warm.url}/api/notes", opener=opener)[0] == 200

    postgres.freeze()
    try:
        cold = start_gunicorn(env)  # its pool is empty: the first data request must connect
        # bounds on timeouts: urllib raises if an answer takes longer
        pooled = timed_get(f"{warm.url}/api/notes", opener, timeout=2 + 3)
        connecting = timed_get(f"{cold.url}/api/notes", opener, timeout=2 + 3)
    finally:
        postgres.thaw()

    assert pooled[0] == connecting[0] == 503
    assert get(f"{warm.url}/api/notes", opener=opener)[0] == 200
    assert get(f"{cold.url}/api/notes", opener=opener)[0] == 200
    for server in (warm, cold):
        assert not [line for line in server.log_lines() if "WORKER TIMEOUT" in line]


def test_gevent_requests_on_a_frozen_redis_end_within_its_timeout(start_gunicorn, app_env, redis_server):
    """Each Redis operation waits REDIS_TIMEOUT (1 s) once: a timeout is not retried."""
    server = start_gunicorn({**app_env, "WEB_CONCURRENCY": "1"})
    opener = register_and_login(server)

    redis_server.freeze()
    try:
        me = timed_get(f"{server.url}/api/auth/me", opener, timeout=1 + 1.5)
        health = timed_get(f"{server.url}/health", opener, timeout=1)
    finally:
        redis_server.thaw()

    assert me[0] == 503 and health[0] == 200
    assert get(f"{server.url}/api/auth/me", opener=opener)[0] == 200


QUEUED = 20  # connections queued on the listener while the workers' loops are held


def test_a_stopping_gunicorn_answers_every_connection_it_had_queued(start_gunicorn, app_env, tmp_path):
    """One request in each worker holds its event loop (as CPU-bound work does) while clients
    connect: the kernel queues their connections on the listener. The master is told to stop
    meanwhile. Once the loops are free, every queued connection is answered, then the listener
    closes and Gunicorn exits 0."""
    server = start_gunicorn({**app_env, "WEB_CONCURRENCY": "2"}, app_module="tests.support.testing_wsgi:app")
    release = tmp_path / "release"
    holders: list[socket.socket] = []
    clients: list[socket.socket] = []
    try:
        for number in range(2):  # the first holds one loop, so only the other worker takes the next
            marker = tmp_path / f"held-{number}"
            holders.append(socket.create_connection(("127.0.0.1", server.port), timeout=20))
            body = json.dumps({"marker": str(marker), "until": str(release)}).encode()
            holders[-1].sendall(b"POST /_test/hold-the-loop HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            wait_for(marker.exists, 10, f"worker loop {number + 1} held")
        clients.extend(socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(QUEUED))
        for client in clients:
            client.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")

        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: any("Handling signal: term" in line for line in server.log_lines()), 10, "the master stopping")
        release.touch()

        assert all(read_until_closed(holder).startswith(b"HTTP/1.1 200 OK") for holder in holders)
        answers = [read_until_closed(client) for client in clients]
        assert [answer.split(b"\r\n", 1)[0] for answer in answers] == [b"HTTP/1.1 200 OK"] * QUEUED
        assert server.proc.wait(30) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    finally:
        release.touch()
        for client in [*holders, *clients]:
            client.close()


def test_a_stopping_gunicorn_answers_or_refuses_every_new_connection(start_gunicorn, app_env):
    """Clients open connection after connection, as nginx does to a replica it still resolves,
    while the master is told to stop: every connection is answered, or refused before anything
    was sent (nginx then tries another replica, for any method). None is reset after its
    request went out: that is a 502 for a POST."""
    server = start_gunicorn({**app_env, "WEB_CONCURRENCY": "1"})
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stopped = threading.Event()

    def client() -> None:
        deadline = time.monotonic() + 30  # bound: the loop ends with `stopped`, or here
        while not stopped.is_set() and time.monotonic() < deadline:
            try:
                connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            except ConnectionRefusedError:
                outcome = "refused"
            else:
                with connection:
                    connection.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    answer = read_until_closed(connection)
                outcome = "answered" if answer.startswith(b"HTTP/1.1 200") else f"unanswered: {answer[:40]!r}"
            with lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(12)]
    for thread in threads:
        thread.start()
    wait_for(lambda: outcomes["answered"] >= 300, 30, "connections answered before the stop")
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: outcomes["refused"] >= 100, 30, "the listener closed")
    stopped.set()
    for thread in threads:
        thread.join(15)

    assert set(outcomes) == {"answered", "refused"}, outcomes
    assert server.proc.wait(30) == 0


def read_until_closed(client: socket.socket) -> bytes:
    """Everything the server sent until it closed the connection; b"" if it reset it unanswered."""
    received = b""
    try:
        while chunk := client.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_a_reload_keeps_the_listener_taking_connections(start_gunicorn, app_env):
    """SIGHUP replaces the workers on the same listener: an old worker closing its copy of the
    listener must not stop it taking connections for the new ones."""
    server = start_gunicorn({**app_env, "WEB_CONCURRENCY": "2"})
    old = set(server.worker_pids())

    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(set(server.worker_pids()) - old) == 2 and not old & set(server.worker_pids()), 30,
             "two new workers, the old ones gone")

    for _ in range(20):  # new connections, each to whichever worker accepts it
        assert get(f"{server.url}/health", timeout=5)[0] == 200


def test_the_draining_listener_hands_over_every_queued_connection_before_it_closes():
    """app/gunicorn_worker.py's listener, under gevent's StreamServer as Gunicorn's gevent
    worker runs it: a stopping worker closes the server, and gevent's own close would leave
    the connections still queued on the listener to the kernel, which resets them. This one
    accepts each and hands it to the worker first. The server must keep the wrapper: gevent
    unwraps a listener down to its innermost socket unless it hides it. Each handler, like
    Gunicorn's, first asks its listener's name, and starts after the close: so does one the
    accept loop spawned just before it."""
    listener = gevent_socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    address = listener.getsockname()
    handed: list[tuple[bytes, tuple]] = []

    def handle(given_listener, client, _address):
        with client:
            name = given_listener.getsockname()
            handed.append((client.recv(16), name))
            client.sendall(b"answer")

    draining = DrainingListener(listener, handle)
    server = StreamServer(draining, handle=lambda client, peer: handle(draining, client, peer))
    server.init_socket()
    assert server.socket is draining
    clients = [socket.create_connection(address, timeout=5) for _ in range(4)]
    try:
        for number, client in enumerate(clients):
            client.sendall(b"request %d" % number)
        accepted, peer = listener.accept()  # as the accept loop does, its handler not yet started
        spawned_before = gevent.spawn(handle, draining, accepted, peer)

        server.close()
        gevent.joinall([spawned_before, *draining.drained], timeout=5)

        assert len(draining.drained) == 3
        assert sorted(handed) == [(b"request %d" % number, address) for number in range(4)]
        assert [client.recv(16) for client in clients] == [b"answer"] * 4
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5).close()
    finally:
        for client in clients:
            client.close()


def metrics_dir(server) -> Path:
    """The master's multiprocess directory (gunicorn.conf.py), beside the heartbeat files."""
    return Path("/dev/shm") / f"gunicorn-metrics-{server.proc.pid}"


def test_each_master_counts_in_a_fresh_directory_of_its_own_and_removes_it(start_gunicorn, app_env):
    """Two servers on one host never add to each other's counts, and none outlives its master."""
    first, second = start_gunicorn({**app_env, "WEB_CONCURRENCY": "2"}), start_gunicorn(app_env)
    for _ in range(3):
        assert get(f"{first.url}/api/notes")[0] == 401
    assert get(f"{second.url}/api/notes")[0] == 401

    def counted(server) -> str:
        lines = get(server.metrics_url)[2].decode().splitlines()
        return next(line for line in lines if line.startswith('http_requests_total{method="GET",route="/api/notes"'))

    assert counted(first).endswith(" 3.0") and counted(second).endswith(" 1.0")
    directories = [metrics_dir(server) for server in (first, second)]
    assert all(directory.is_dir() and list(directory.glob("counter_*.db")) for directory in directories)
    for server in (first, second):
        assert server.stop() == 0
    assert not any(directory.exists() for directory in directories)
