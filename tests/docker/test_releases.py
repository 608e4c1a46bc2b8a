"""Releases under load, on the private Docker engine: scripts/deploy.sh against the production
Compose files, with a real registry, while users read and write through nginx TLS at 100
requests/s and every answer is counted.

The server is a directory holding only the Compose files and .env (no checkout); the releases
are images built from this repo and pushed to the registry (harness/releases.py): A and B (which differ in their
release id), C (its web exits at boot), and D (ready inside its container, failing readiness
once it takes traffic through nginx, and bringing a migration of its own); and later this
checkout's commit, built and pushed by docs/deploy.md §1's own commands. The scenarios run in
order on one stack, as a server lives through them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import REPO
from harness.compose import Stack
from harness.docker import compose_binary
from harness.https import exchange, parse_response
from harness.load import LoadRun, Recorder
from harness.process import free_port
from harness.releases import REVISION, A, B, C, D
from harness.servers import SshServer
from harness.traffic import Users, switches_under_load
from harness.wait import wait_for
from harness.workflow import clone_for_act, log_excerpt, run_workflow

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RATE = 100  # requests per second through nginx during every release
LOAD_USERS = 16
SERVER_FILES = ("docker-compose.yml", "docker-compose.prod.yml")
LOOPBACK = Path(__file__).with_name("compose.loopback.yml")
DEPLOY = REPO / "scripts" / "deploy.sh"


@dataclass
class Server:
    """The deploy directory of one server and what it takes to run deploy.sh there."""

    path: Path
    env: dict[str, str]
    stack: Stack
    build_args: dict[str, str]  # what this machine's builds add: the stand-in bases, the wheelhouse
    documented: str = ""  # the release built as docs/deploy.md says, once it is

    def deploy(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(DEPLOY), *args], cwd=self.path, env=self.env, capture_output=True, text=True,
                                timeout=600)
        if check:
            assert result.returncode == 0, f"deploy.sh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def history(self) -> list[str]:
        return [line.split()[2] for line in (self.path / "releases.log").read_text().splitlines()]

    def recorded_digests(self, line: int) -> dict[str, str]:
        """The digests a line of the history records: {"web": "sha256:…", "nginx": …, "backup": …}."""
        fields = (self.path / "releases.log").read_text().splitlines()[line].split()[3:]
        return dict(field.split("=", 1) for field in fields)

    def env_tag(self) -> str:
        return self.setting("TAG")

    def web_containers(self) -> list[str]:
        return self.stack.compose("ps", "--all", "--quiet", "web").stdout.split()

    def setting(self, name: str) -> str:
        return next(line.split("=", 1)[1] for line in (self.path / ".env").read_text().splitlines()
                    if line.startswith(f"{name}="))

    def inspect(self, service: str, template: str) -> str:
        """One container of the service (its first replica)."""
        container = self.stack.compose("ps", "--quiet", service).stdout.split()[0]
        inspected = self.stack.engine.docker("inspect", "--format", template, container, capture=True)
        return inspected.stdout.decode().strip()

    def release_ids(self) -> set[str]:
        return {self.stack.engine.docker("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}",
                                         container, capture=True).stdout.decode().split("APP_RELEASE=")[1].split()[0]
                for container in self.web_containers()}


@pytest.fixture(scope="module")
def server(docker_engine, base_images, web_image, release_registry, tmp_path_factory) -> Iterator[Server]:
    path = tmp_path_factory.mktemp("server")
    for name in SERVER_FILES:
        shutil.copy(REPO / name, path / name)
    shutil.copy(LOOPBACK, path / "docker-compose.loopback.yml")
    http_port, https_port = free_port(), free_port()
    (path / ".env").write_text("".join(f"{name}={value}\n" for name, value in {
        "REGISTRY": release_registry, "DOMAIN": "localhost", "SECRET_KEY": uuid.uuid4().hex * 2,
        "POSTGRES_PASSWORD": uuid.uuid4().hex, "REDIS_PASSWORD": uuid.uuid4().hex, "WEB_REPLICAS": "2",
        "HTTP_PORT": http_port, "HTTPS_PORT": https_port,
        # all test traffic reaches nginx from one address (docker-proxy's): lift the per-address limits
        "NGINX_API_RATE": "100000r/s", "NGINX_API_BURST": "100000", "NGINX_CONN_LIMIT": "10000",
        "POSTGRES_IMAGE": base_images["POSTGRES_IMAGE"], "REDIS_IMAGE": base_images["REDIS_IMAGE"],
    }.items()))
    project = f"fk-releases-{os.getpid()}"
    env = {**docker_engine.env, "COMPOSE": compose_binary(), "COMPOSE_PROJECT_NAME": project,
           "DEPLOY_COMPOSE_FILES": " ".join((*SERVER_FILES, "docker-compose.loopback.yml")),
           "DEPLOY_READY_TIMEOUT": "90"}  # HTTPS_PORT: deploy.sh reads .env's
    stack = Stack(docker_engine, project, env, http_port, https_port,
                  files=tuple(path / name for name in (*SERVER_FILES, "docker-compose.loopback.yml")),
                  env_file=path / ".env")
    try:
        yield Server(path, env, stack, {**base_images, "WHEELHOUSE": web_image.build_env["WHEELHOUSE"]})
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "45", check=False)


@pytest.fixture(scope="module")
def users(server) -> Iterator[Users]:
    server.deploy("deploy", A)  # the first release on an empty server starts the whole stack
    users = Users(server.stack, LOAD_USERS)
    yield users
    users.close()


def under_load(server: Server, users: Users, *args: str) -> tuple[subprocess.CompletedProcess, Recorder]:
    """Run one deploy.sh command while users keep reading and writing; then retry (with their
    keys) the writes that failed, as clients do. The users are strict clients: a request on a
    kept-alive connection that ends unanswered is a failure, never sent again."""
    results, recorder = commands_under_load(server, users, args)
    return results[0], recorder


# A deploy.sh command's arguments, or anything else that switches releases (a workflow run).
Command = tuple[str, ...] | Callable[[], subprocess.CompletedProcess]


def commands_under_load(server: Server, users: Users, *commands: Command
                        ) -> tuple[list[subprocess.CompletedProcess], Recorder]:
    """deploy.sh commands (or workflow runs) one after another, under one load (see under_load)."""
    results, recorder = switches_under_load(
        users, [args if callable(args) else (lambda args=args: server.deploy(*args, check=False)) for args in commands],
        rate=RATE)
    for args, result in zip(commands, results, strict=True):
        print(f"{args.__name__ if callable(args) else 'deploy.sh ' + ' '.join(args)}: exit {result.returncode}")
    print(f"load: {recorder.summary()}")
    if any(not o.ok for o in recorder.outcomes):
        print("nginx's lines for failed data requests:", *failed_in_nginx(server), sep="\n  ")
        for result in results:  # which replicas went live and drained when, by address
            print(result.stdout, result.stderr, sep="\n")
    return results, recorder


def failed_in_nginx(server: Server) -> list[str]:
    """Who answered the failures: nginx itself, after which replica attempts, or the app (its
    access lines, so not readiness polls), and nginx's error lines about the replicas."""
    logs = server.stack.compose("logs", "--no-log-prefix", "--since", "10m", "nginx").stdout
    entries = [json.loads(line) for line in logs.splitlines() if line.startswith("{") and '"upstream_addr"' in line]
    errors = [line for line in logs.splitlines() if not line.startswith("{") and "upstream" in line]
    return [f"{e['method']} {e['uri']} {e['status']} upstream {e['upstream_addr']} -> {e['upstream_status']}"
            for e in entries if e["status"] >= 500][-20:] + errors[-20:]


def assert_nothing_left_behind(server: Server, replicas: int = 2) -> None:
    assert len(server.web_containers()) == replicas, server.deploy("status").stdout
    with open(server.path / ".deploy.lock") as lock:  # free, and naming no holder
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock.read() == ""


def assert_nothing_dropped(recorder: Recorder, users: Users) -> None:
    """No readiness poll, read or write failed, and every acknowledged write is stored once.
    A draining replica refuses new connections before anything is sent on them, and answers
    every one it had accepted or queued (app/gunicorn_worker.py), so even a POST, which nginx
    cannot pass on once sent, never meets a reset (docs/deploy.md, "Draining without a reset")."""
    assert not failures(recorder), (recorder.summary(), users.refusals)
    assert users.verify_writes() == []


def failures(recorder: Recorder, *ops: str) -> Counter:
    return Counter(("error" if o.status is None else o.status) for o in recorder.outcomes
                   if not o.ok and (not ops or o.op in ops))


def test_the_first_release_starts_the_whole_stack(server, users):
    assert server.history() == [A] and server.env_tag() == A
    assert server.release_ids() == {A}
    status = server.deploy("status").stdout
    assert f"current release: {A}" in status and status.count(" ready live\n") == 2


# The production configuration as it runs (the Compose files, with loopback ports only).


def test_prod_serves_the_app_over_https_with_secure_cookies(server, users):
    client = server.stack.client()
    credentials = {"email": f"prod-{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery staple"}
    assert client.request("POST", "/api/auth/register", credentials).status == 201
    login = client.request("POST", "/api/auth/login", credentials)
    assert login.status == 200
    assert "Secure" in login.headers["Set-Cookie"], "production cookies are HTTPS-only"
    assert client.request("POST", "/api/notes", {"title": "prod"}).status == 201


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_prod_answers_a_balancers_probe_by_address_and_nothing_else(server, users, tls):
    """The published ports, as a target-group check reaches them: Host the address, no SNI."""
    port = server.stack.https_port if tls else server.stack.http_port

    def by_address(path: str) -> bytes:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        return exchange(port, request, tls=tls)

    for path in ("/health", "/health/ready"):
        response = parse_response(by_address(path))
        assert response.status == 200, response.body
        assert response.headers["Content-Type"] == "application/health+json"
    assert by_address("/") == by_address("/api/notes") == b""


def test_prod_runs_the_release_images_by_digest_in_production_mode(server, users):
    """deploy.sh was given no digests: it pinned what the tags pointed to when it pulled, and
    recorded them in .env and the history."""
    registry = server.setting("REGISTRY")
    recorded = server.recorded_digests(0)
    for name in ("web", "nginx"):
        digest = server.setting(f"{name.upper()}_DIGEST")
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest) and recorded[name] == digest
        assert server.inspect(name, "{{.Config.Image}}") == f"{registry}/flask-kit-{name}:sha-{A}@{digest}"
    assert "APP_ENV=production" in server.inspect("web", "{{range .Config.Env}}{{println .}}{{end}}")


@pytest.mark.parametrize("service", ["db", "redis", "web", "nginx"])
def test_prod_root_filesystems_are_read_only(server, users, service):
    assert server.inspect(service, "{{.HostConfig.ReadonlyRootfs}}") == "true"
    assert server.inspect(service, "{{.HostConfig.SecurityOpt}}") == "[no-new-privileges:true]"
    assert server.inspect(service, "{{.HostConfig.LogConfig.Type}}") == "json-file"


def test_prod_web_has_no_capabilities_and_cannot_write_its_code(server, users):
    status = server.stack.compose("exec", "-T", "web", "cat", "/proc/1/status").stdout
    assert "CapEff:\t0000000000000000" in status
    write = server.stack.compose("exec", "-T", "web", "sh", "-c", "echo x > /app/x", check=False)
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr + write.stdout


def test_prod_redis_demands_the_password_and_keeps_it_off_the_command_line(server, users):
    stack, password = server.stack, server.setting("REDIS_PASSWORD")
    assert "NOAUTH" in stack.compose("exec", "-T", "redis", "redis-cli", "ping").stdout
    authenticated = stack.compose("exec", "-T", "-e", f"REDISCLI_AUTH={password}", "redis", "redis-cli", "ping")
    assert authenticated.stdout.strip() == "PONG"
    # what `ps` and /proc show of the running server: neither its argv nor its environment
    for view in ("cmdline", "environ"):
        # as the redis user: root in this container lacks CAP_SYS_PTRACE to read another user's environ
        assert password not in stack.compose("exec", "-T", "--user", "redis", "redis", "cat", f"/proc/1/{view}").stdout
    assert password not in server.inspect("redis", "{{json .Config.Cmd}} {{json .Config.Entrypoint}}")


# Releases, in order.


def test_deploy_a_to_b_drops_nothing(server, users):
    result, recorder = under_load(server, users, "deploy", B)

    assert result.returncode == 0, result.stderr
    assert_nothing_dropped(recorder, users)
    assert users.verify_writes() == []
    assert server.release_ids() == {B} and server.history() == [A, B] and server.env_tag() == B
    assert_nothing_left_behind(server)


def table_digests(server: Server) -> dict[str, str]:
    """One digest of every row of each table: equal digests, equal contents."""
    tables = server.stack.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").split()
    return {table: server.stack.sql(f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                                    f'FROM "{table}" t') for table in tables}


def in_backup_container(server: Server, *command: str) -> subprocess.CompletedProcess:
    """A one-off container of the backup service: its image, environment and volume."""
    return server.stack.compose("run", "--rm", "--no-deps", "-T", "backup", *command, check=False)


def test_the_backup_service_backs_up_and_its_backup_restores(server, users):
    # the service made a first backup when the stack started (there was none); B's has kept it
    assert in_backup_container(server, "sh", "-c", "ls /backups/flask-*.dump").stdout.strip()
    before = table_digests(server)
    assert int(server.stack.sql("SELECT count(*) FROM notes")) >= LOAD_USERS
    made = in_backup_container(server, "backup.sh")
    assert made.returncode == 0, made.stderr
    backup = made.stdout.strip().splitlines()[-1]
    assert backup.startswith("/backups/flask-") and backup.endswith(".dump")

    for statement in ("DROP DATABASE flask WITH (FORCE)", "CREATE DATABASE flask OWNER flask"):
        server.stack.compose("exec", "-T", "db", "psql", "-X", "-U", "flask", "-d", "postgres", "-c", statement)
    assert table_digests(server) == {}
    restored = in_backup_container(server, "restore.sh", backup)

    assert restored.returncode == 0, restored.stderr
    assert "the schema is at the migration head" in restored.stderr
    assert table_digests(server) == before
    wait_for(lambda: users.ready(0, 0) == 200, 30, "readiness through nginx after the restore")

    # a truncated backup whose checksum matches: refused before the target is touched
    truncated = "/backups/flask-20000101T000000Z.dump"
    in_backup_container(server, "sh", "-c", f"head -c $(($(stat -c %s {backup}) / 2)) {backup} > {truncated} && "
                                            f"cd /backups && sha256sum {truncated.split('/')[-1]} > {truncated}.sha256")
    refused = in_backup_container(server, "restore.sh", "--force", truncated)
    in_backup_container(server, "rm", "-f", truncated, f"{truncated}.sha256")

    assert refused.returncode != 0 and "restore: error:" in refused.stderr, refused.stderr
    assert table_digests(server) == before
    assert users.verify_writes() == []


def test_a_release_that_cannot_start_is_refused_while_b_serves(server, users):
    result, recorder = under_load(server, users, "deploy", C)

    assert result.returncode == 1
    assert "deploy: error: readiness failed: the new replicas of" in result.stderr
    assert "release C cannot start" in result.stderr  # its last log lines, for the operator
    assert " exited after " in result.stderr and "not ready within" not in result.stderr  # says which
    assert_nothing_dropped(recorder, users)
    assert server.release_ids() == {B} and server.history() == [A, B] and server.env_tag() == B
    assert_nothing_left_behind(server)


def test_a_release_failing_the_gate_is_rolled_back_automatically(server, users, tmp_path):
    """Deployed as ops redeploy any pushed release: the workflow's deploy job, run by act on a
    manual dispatch, through CI's restricted key. D migrates (expand: a new column), passes its
    container check, fails readiness through nginx; deploy.sh brings B back, the job fails and
    does not roll back again. B keeps serving on the schema D expanded (readiness: warn)."""
    with ci_host(server, tmp_path) as host:
        def the_deploy_job_dispatched_for_d() -> subprocess.CompletedProcess:
            inputs = {"sha": D, **{f"{name}_digest": digest for name, digest in registry_digests(server, D).items()}}
            return host.run("workflow_dispatch", inputs=inputs)

        result, recorder = commands_under_load(server, users, the_deploy_job_dispatched_for_d)
        result = result[0]

    log = result.stdout + result.stderr
    assert result.returncode != 0, log_excerpt(result)
    assert f"rolled back to {B} automatically" in log, log_excerpt(result)
    assert "The gate did not pass" not in log  # deploy.sh rolled back already: once is enough
    print(f"D's gate: data requests lost {dict(failures(recorder, 'read', 'write'))}, "
          f"readiness 503s from D {dict(failures(recorder, 'ready'))}")
    assert not failures(recorder, "read"), "only D's own readiness answers, and writes counted, may fail"
    assert users.verify_writes() == []
    assert server.release_ids() == {B} and server.history() == [A, B] and server.env_tag() == B
    ready = server.stack.client().request("GET", "/health/ready").json()
    assert ready["status"] == "warn" and ready["releaseId"] == B  # the database is ahead of B
    assert_nothing_left_behind(server)


def test_rollback_to_a_drops_nothing_and_returns_to_its_recorded_bytes(server, users):
    """Meanwhile A's tag was pushed again, with B's web image: the rollback runs A's digest."""
    registry, engine = server.setting("REGISTRY"), server.stack.engine
    a_digests = server.recorded_digests(0)
    engine.docker("tag", f"{registry}/flask-kit-web@{server.setting('WEB_DIGEST')}",
                  f"{registry}/flask-kit-web:sha-{A}", capture=True)
    engine.docker("push", "--quiet", f"{registry}/flask-kit-web:sha-{A}", capture=True)
    try:
        result, recorder = under_load(server, users, "rollback")
    finally:  # the tag back where it was, for whoever pulls it next
        engine.docker("tag", f"{registry}/flask-kit-web@{a_digests['web']}", f"{registry}/flask-kit-web:sha-{A}",
                      capture=True)
        engine.docker("push", "--quiet", f"{registry}/flask-kit-web:sha-{A}", capture=True)

    assert result.returncode == 0, result.stderr
    assert_nothing_dropped(recorder, users)
    assert users.verify_writes() == []
    assert server.release_ids() == {A} and server.history() == [A, B, A] and server.env_tag() == A
    assert server.setting("WEB_DIGEST") == a_digests["web"]
    assert server.inspect("web", "{{.Config.Image}}") == f"{registry}/flask-kit-web:sha-{A}@{a_digests['web']}"
    assert_nothing_left_behind(server)


def test_killing_one_of_two_replicas_loses_no_get(server, users):
    users.forget_writes()
    load = LoadRun([("ready", users.ready), ("read", users.read), ("write", users.write)], rate=RATE,
                   duration=60, max_requests=20_000, workers=LOAD_USERS)
    victim = server.web_containers()[0]
    with load:
        wait_for(lambda: sum(o.ok for o in load.recorder.outcomes) >= 100, 30, "traffic before the kill")
        killed = time.monotonic()
        server.stack.engine.docker("kill", "--signal", "KILL", victim, capture=True)
        wait_for(lambda: sum(o.ok for o in load.recorder.outcomes if o.started > killed) >= 200, 30,
                 "traffic after the kill")
    users.retry_failed_writes()
    print(f"one replica killed: lost {dict(failures(load.recorder))} of {load.recorder.summary()['requests']}")
    assert not failures(load.recorder, "ready", "read"), ("nginx retries a GET on the other replica",
                                                           users.refusals)
    assert users.verify_writes() == []
    # A killed container stays down (a manual kill, unlike a crash, is not restarted by Docker):
    # `scale` brings the count back, under load, and points nginx at both.
    result, recorder = under_load(server, users, "scale", "2")
    assert result.returncode == 0, result.stderr
    assert_nothing_dropped(recorder, users)
    assert server.deploy("status").stdout.count(" ready live\n") == 2
    assert_nothing_left_behind(server)


def live_address(server: Server, container: str) -> str:
    """The replica's address on the live network (where nginx reaches it), or ""."""
    networks = json.loads(server.stack.engine.docker("inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                                     container, capture=True).stdout)
    return next((network["IPAddress"] for name, network in networks.items()
                 if name.endswith("_live") and "web-live" in (network.get("Aliases") or [])), "")


def upstreams_since(server: Server, since: str) -> list[str]:
    """The replica address that answered each request nginx logged since `since` (the last one
    tried, when nginx passed a request on)."""
    logs = server.stack.compose("logs", "--no-log-prefix", "--since", since, "nginx").stdout
    addresses = []
    for line in logs.splitlines():
        if line.startswith("{") and '"upstream_addr"' in line:
            tried = json.loads(line)["upstream_addr"]
            if tried:
                addresses.append(tried.split(", ")[-1].rsplit(":", 1)[0])
    return addresses


def test_a_crashed_replica_serves_again_by_itself(server, users):
    """SIGKILL of one replica's Gunicorn master (its PID 1) from the host, as the OOM killer
    does it: Docker restarts the container (often under a new address), and nginx, re-resolving the
    live name every second, sends it its share again, with no operator and no deploy."""
    users.forget_writes()
    victim = server.web_containers()[0]

    def state() -> tuple[int, int, bool]:
        out = server.stack.engine.docker("inspect", "--format", "{{.State.Pid}} {{.RestartCount}} {{.State.Running}}",
                                         victim, capture=True).stdout.split()
        return int(out[0]), int(out[1]), out[2] == b"true"

    pid, restarts, _ = state()
    before = live_address(server, victim)
    load = LoadRun([("ready", users.ready), ("read", users.read), ("write", users.write)], rate=RATE,
                   duration=90, max_requests=20_000, workers=LOAD_USERS)
    with load:
        wait_for(lambda: sum(o.ok for o in load.recorder.outcomes) >= 100, 30, "traffic before the crash")
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: state()[1] > restarts and state()[2], 30, "Docker to restart the crashed replica")
        restarted_at = server.stack.engine.docker("inspect", "--format", "{{.State.StartedAt}}", victim,
                                                  capture=True).stdout.decode().strip()
        after = live_address(server, victim)

        def share() -> float:
            recent = upstreams_since(server, restarted_at)[-50:]
            return recent.count(after) / len(recent) if len(recent) == 50 else 0.0

        # At least a fifth of the requests, within a generous bound: Docker's restart is done,
        # so this is Gunicorn's boot on a loaded machine plus nginx's one-second re-resolve.
        wait_for(lambda: share() >= 0.2, 45, f"the restarted replica ({after}) taking a fifth of the requests")
        measured, serving_after = share(), time.monotonic() - killed
    users.retry_failed_writes()
    after_kill = [o for o in load.recorder.outcomes if o.started > killed]
    print(f"crash: {before} -> {after}; a fifth of the requests {serving_after:.1f} s after the kill "
          f"(share of the last 50: {measured:.0%}); "
          f"lost {dict(failures(load.recorder))}; slowest after the kill {max(o.duration for o in after_kill):.2f} s")
    assert after, "restarted still live (under a new address or its old one: Docker may reuse it)"
    assert not failures(load.recorder, "ready", "read"), ("nginx passes a GET on; the dead address costs 500 ms",
                                                           users.refusals)
    # The 500 ms bound on connecting to a dead address is proven in tests/nginx/test_proxy.py;
    # here, on a loaded machine, latency is printed, not asserted.
    assert users.verify_writes() == []
    assert server.deploy("status").stdout.count(" ready live\n") == 2
    assert_nothing_left_behind(server)


def test_scale_up_and_down_drops_nothing_and_status_reports_what_nginx_cannot_reach(server, users):
    results, recorder = commands_under_load(server, users, ("scale", "3"), ("scale", "2"))

    assert [result.returncode for result in results] == [0, 0], [result.stderr for result in results]
    assert_nothing_dropped(recorder, users)
    assert users.verify_writes() == []
    assert_nothing_left_behind(server)

    # A replica cut off from nginx: status names it and exits 1; scale makes it live again.
    cut_off = server.web_containers()[0]
    network = next(name for name in json.loads(server.stack.engine.docker(
        "inspect", "--format", "{{json .NetworkSettings.Networks}}", cut_off, capture=True).stdout)
        if name.endswith("_live"))
    server.stack.engine.docker("network", "disconnect", network, cut_off, capture=True)
    status = server.deploy("status", check=False)
    assert status.returncode == 1, status.stdout
    assert "ready not live" in status.stdout and status.stdout.count(" ready live\n") == 1
    assert "fix: " in status.stderr
    repaired = server.deploy("scale", "2")
    assert "live: nginx did not reach it" in repaired.stdout
    assert server.deploy("status").stdout.count(" ready live\n") == 2
    assert_nothing_left_behind(server)


def test_a_running_server_moves_to_docker_secrets(server, users):
    """docs/operations.md's procedure, up to its deploy: the same passwords into files, .env
    without them, the servers recreated. The next test's deploy replaces the web replicas."""
    secrets = {name: server.setting(name) for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")}
    subprocess.run([str(REPO / "scripts" / "make-secrets.sh"), "--from-env", ".env", "secrets"], cwd=server.path,
                   check=True, capture_output=True)
    lines = [line for line in (server.path / ".env").read_text().splitlines()
             if line.split("=", 1)[0] not in secrets]
    (server.path / ".env").write_text("\n".join([*lines, f"SECRETS_DIR={server.path / 'secrets'}"]) + "\n")
    shutil.copy(REPO / "docker-compose.secrets.yml", server.path)
    server.env["DEPLOY_COMPOSE_FILES"] += " docker-compose.secrets.yml"
    server.stack.files = (*server.stack.files, server.path / "docker-compose.secrets.yml")

    server.stack.compose("up", "--detach", "--no-deps", "--wait", "--wait-timeout", "120", "db", "redis", "backup")
    wait_for(lambda: users.ready(0, 0) == 200, 60, "readiness after db and redis restarted")

    assert_secrets_only_in_files(server, "db", "redis", "backup")
    refused = server.stack.compose("exec", "-T", "redis", "redis-cli", "ping", check=False)
    assert "NOAUTH" in refused.stdout + refused.stderr


def assert_secrets_only_in_files(server: Server, *services: str) -> None:
    """No secret's value in the services' environment, each read from /run/secrets instead."""
    values = [path.read_text().strip() for path in (server.path / "secrets").iterdir()]
    for service in services:
        environment = server.inspect(service, "{{range .Config.Env}}{{println .}}{{end}}")
        assert not any(value in environment for value in values), service
        assert "_FILE=/run/secrets/" in environment, service


@dataclass
class CiHost:
    """The server as CI's deploy job reaches it: Debian's sshd on a loopback port, where CI's key
    can only run scripts/deploy-command.sh, installed as docs/ci.md says (the script copied
    into the deploy directory, the line its --authorized-key prints)."""

    server: Server
    sshd: SshServer
    key: Path
    checkout: Path

    def run(self, event: str, inputs: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """.github/workflows/ci.yml on `event`, by act, in a clone of this checkout's commit."""
        engine = self.server.stack.engine
        cert = self.server.stack.compose("exec", "-T", "nginx", "cat", "/etc/nginx/certs/fullchain.pem").stdout
        ca = self.checkout.parent / "nginx-ca.pem"
        ca.write_text(cert)
        return run_workflow(
            self.checkout, "ci.yml", event, inputs=inputs,
            variables={"REGISTRY": self.server.setting("REGISTRY"), "DEPLOY_HOST": "127.0.0.1",
                       "DEPLOY_PORT": str(self.sshd.port), "DEPLOY_USER": "root",
                       "DEPLOY_URL": f"https://localhost:{self.server.stack.https_port}"},
            secrets={"DEPLOY_SSH_KEY": self.key.read_text(), "DEPLOY_KNOWN_HOSTS": self.sshd.known_hosts_line()},
            # this machine's differences only: its engine, the stand-in bases, the wheelhouse
            # (pip inside a build cannot verify PyPI's TLS here), and the test CA for the gate
            env={**{name: engine.env[name] for name in ("DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_BUILDKIT")},
                 **{name: value for name, value in self.server.build_args.items() if name != "REDIS_IMAGE"},
                 "RELEASE_PULL": "0", "CURL_CA_BUNDLE": str(ca)})


@contextlib.contextmanager
def ci_host(server: Server, tmp_path: Path) -> Iterator[CiHost]:
    key = tmp_path / "ci_deploy"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", str(key)], check=True)
    shutil.copy(REPO / "scripts" / "deploy-command.sh", server.path)
    line = subprocess.run([str(server.path / "deploy-command.sh"), "--authorized-key", f"{key}.pub", str(server.path)],
                          capture_output=True, text=True, check=True).stdout
    sshd = SshServer(tmp_path / "sshd", line,
                     {name: server.env[name] for name in ("DOCKER_HOST", "DOCKER_CONFIG", "COMPOSE",
                                                          "COMPOSE_PROJECT_NAME", "DEPLOY_COMPOSE_FILES",
                                                          "DEPLOY_READY_TIMEOUT")})
    checkout = clone_for_act(REPO, tmp_path / "checkout", extra=(server.build_args["WHEELHOUSE"],))
    sshd.start()
    try:
        yield CiHost(server, sshd, key, checkout)
    finally:
        sshd.stop()


def registry_digests(server: Server, sha: str) -> dict[str, str]:
    """What the registry holds under sha-<sha>, image by image: the digests CI would pass."""
    digests = {}
    for name in ("web", "nginx", "backup"):
        request = urllib.request.Request(
            f"http://{server.setting('REGISTRY')}/v2/flask-kit-{name}/manifests/sha-{sha}", method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            digests[name] = answer.headers["Docker-Content-Digest"]
    return digests


def test_the_workflow_builds_pushes_and_deploys_this_commit_through_the_restricted_key(server, users, tmp_path):
    """.github/workflows/ci.yml on a push to main, run by act: the image job builds the release
    once (scripts/build-release.sh, as docs/deploy.md §1 does) and pushes it; the deploy job
    deploys those digests over SSH with a key that can do nothing else, and its gate passes.
    It is also the deploy that ends the move to Docker secrets (the test before): the new web
    replicas read theirs from files."""
    with ci_host(server, tmp_path) as host:
        release = subprocess.run(["git", "rev-parse", "HEAD"], cwd=host.checkout, capture_output=True, text=True,
                                 check=True).stdout.strip()
        result = host.run("push")
    server.documented = release

    log = result.stdout + result.stderr
    assert result.returncode == 0, log_excerpt(result)
    assert f"deploy: {release} is live" in log and "passed: 5 answers in a row" in log, log_excerpt(result)
    # the digests the image job pushed are what the server runs, and what the registry holds
    pushed = registry_digests(server, release)
    assert all(f"{name}={digest}" in log for name, digest in pushed.items()), log_excerpt(result)
    assert {name: server.setting(f"{name.upper()}_DIGEST") for name in pushed} == pushed
    assert server.inspect("web", "{{.Config.Image}}").endswith(f"@{pushed['web']}")
    assert server.release_ids() == {release} and server.history() == [A, B, A, release]
    assert_nothing_left_behind(server)
    assert_secrets_only_in_files(server, "web")
    client = users.clients[0]
    for path in ("/health/ready", "/api/notes?per_page=5"):
        answer = client.request("GET", path)
        assert answer.status == 200, (path, answer.status, answer.body, failed_in_nginx(server))
    # pruned: the images of releases outside the last three recorded (C and D never were)
    # (images pulled by digest alone have no tag: listed by repository, read by label)
    listed = server.stack.engine.docker("image", "ls", "--format", "{{.Repository}} {{.ID}}",
                                        capture=True).stdout.decode().splitlines()
    registry = server.setting("REGISTRY")
    kept = {server.stack.engine.docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{REVISION}"}}}}',
                                       line.split()[1], capture=True).stdout.decode().strip()
            for line in listed if line.startswith(f"{registry}/")}
    assert kept == {A, B, release}


def test_a_second_deploy_is_refused_and_told_who_holds_the_lock(server, users):
    with open(server.path / ".deploy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("pid 4242 (ci) since 12:00:00Z: deploy 1234567\n")
        lock.flush()
        result = server.deploy("deploy", A, check=False)
        lock.truncate(0)

    assert result.returncode == 1
    assert "another deploy holds the lock" in result.stderr and "pid 4242 (ci)" in result.stderr
    assert server.history() == [A, B, A, server.documented]
