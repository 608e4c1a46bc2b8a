"""End to end: the real Dockerfile and docker-compose.yml, run by a private dockerd on
local stand-in images, exercised over HTTPS on 127.0.0.1 the way a user would."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import pytest

from harness import REPO
from harness.compose import Stack
from harness.docker import DockerEngine
from harness.https import SERVER_NAME
from harness.process import free_port
from harness.wait import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APP_UID = "10001"


@pytest.fixture(scope="module")
def stack(docker_engine, web_image):
    # BASE_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE, NGINX_IMAGE -> local stand-ins; WEB_IMAGE, GIT_SHA
    env = dict(web_image.build_env)
    stack = Stack(docker_engine, f"fk-e2e-{os.getpid()}", env, free_port(), free_port())
    env.update(HTTP_PORT=str(stack.http_port), HTTPS_PORT=str(stack.https_port))
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def test_http_redirects_to_https_with_308(stack):
    response = stack.request("POST", "/api/notes?x=1", body={"title": "t"}, https=False)
    assert response.status == 308
    assert response.headers["Location"] == f"https://{SERVER_NAME}/api/notes?x=1"


def test_https_responses_carry_the_security_headers(stack):
    response = stack.request("GET", "/health")
    assert response.status == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "Server" not in response.headers or "/" not in response.headers["Server"]  # server_tokens off


def test_health_and_readiness_pass_through_nginx(stack):
    assert stack.request("GET", "/health").status == 200
    ready = stack.request("GET", "/health/ready")
    assert ready.status == 200, ready.body
    assert ready.headers["Content-Type"].startswith("application/health+json")
    assert ready.json()["status"] == "pass"


def test_static_files_come_from_nginx(stack):
    response = stack.request("GET", "/static/robots.txt")
    assert response.status == 200
    assert response.body == (REPO / "app" / "static" / "robots.txt").read_bytes()
    assert response.headers["Cache-Control"] == "max-age=86400"  # nginx's `expires 1d`, not Flask


def test_register_login_and_notes(stack):
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.com"
    credentials = {"email": email, "password": "correct horse battery staple"}
    assert stack.request("POST", "/api/auth/register", credentials).status == 201
    login = stack.request("POST", "/api/auth/login", credentials)
    assert login.status == 200, login.body
    assert stack.cookies, "login set no session cookie"
    created = stack.request("POST", "/api/notes", {"title": "from the container", "body": "hello"})
    assert created.status == 201, created.body
    listed = stack.request("GET", "/api/notes")
    assert listed.status == 200
    assert [note["title"] for note in listed.json()["items"]] == ["from the container"]
    assert stack.request("GET", "/api/auth/me").json()["email"] == email


def test_request_id_is_echoed(stack):
    response = stack.request("GET", "/health", headers={"X-Request-ID": "e2e-trace.42"})
    assert response.headers["X-Request-ID"] == "e2e-trace.42"
    generated = stack.request("GET", "/health", headers={"X-Request-ID": "not valid!"})
    assert generated.headers["X-Request-ID"] not in ("", "not valid!")


def test_web_runs_gunicorn_as_pid_1_under_uid_10001(stack, web_image):
    assert stack.compose("exec", "-T", "web", "id", "-u").stdout.strip() == APP_UID
    cmdline = stack.compose("exec", "-T", "web", "cat", "/proc/1/cmdline").stdout.split("\0")
    # the Dockerfile's command, exec'd by the entrypoint: gevent's launcher running Gunicorn
    assert cmdline[1:5] == ["-m", "gevent.monkey", "--module", "gunicorn"], cmdline
    assert stack.inspect("web", "{{.Config.User}}") == f"{APP_UID}:{APP_UID}"
    env = stack.compose("exec", "-T", "web", "printenv", "APP_RELEASE").stdout.strip()
    assert env == web_image.git_sha


def test_image_holds_no_tests_env_files_or_wheelhouse(stack):
    listing = stack.compose("exec", "-T", "web", "ls", "-A", "/app").stdout.split()
    assert sorted(listing) == ["__pycache__", "app", "gunicorn.conf.py", "migrations", "wsgi.py"]  # wsgi.py's bytecode


# What the server's master imports (gevent's launcher, Gunicorn and its gevent worker, the app),
# then every imported source file without its bytecode beside it, after a count of the sources.
UNCOMPILED_AT_BOOT = """
import importlib.util, os, sys
from gevent import monkey; monkey.patch_all()
import gunicorn.app.wsgiapp, gunicorn.workers.ggevent, wsgi
sources = {m.__file__ for m in list(sys.modules.values()) if (getattr(m, "__file__", None) or "").endswith(".py")}
print(len(sources))
print("\\n".join(sorted(s for s in sources if not os.path.exists(importlib.util.cache_from_source(s)))))
"""


def test_every_module_the_server_imports_is_compiled_in_the_image(stack):
    """The container cannot write bytecode (read-only, PYTHONDONTWRITEBYTECODE), and the base
    image ships the standard library without it; anything left uncompiled is compiled again on
    every start."""
    count, *uncompiled = stack.compose("exec", "-T", "web", "python", "-c", UNCOMPILED_AT_BOOT).stdout.splitlines()
    assert int(count) > 300  # the stdlib, the venv and the app: the check saw the real import graph
    assert [path for path in uncompiled if path] == []


def test_image_healthcheck_fails_on_a_non_2xx_health(stack, web_image):
    """Run the built image with a stand-in server on :8000 that answers /health with 500,
    then 200: Docker's health status must follow, through the image's own HEALTHCHECK."""
    server = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(int(open('/tmp/status').read()))\n"
        "        self.end_headers()\n"
        "open('/tmp/status', 'w').write('500')\n"
        "http.server.HTTPServer(('127.0.0.1', 8000), H).serve_forever()\n"
    )
    name = f"{stack.project}-healthcheck"
    # start period 1ms: 0s would mean "inherit the image's 20 s", when failures do not count
    stack.engine.docker("run", "--detach", "--name", name, "--network", "none", "--health-interval", "1s",
                        "--health-retries", "1", "--health-start-period", "1ms", "--entrypoint", "python",
                        web_image.name, "-c", server, capture=True)
    try:
        assert _wait_health(stack.engine, name, "unhealthy") == "unhealthy"
        stack.engine.docker("exec", name, "sh", "-c", "echo 200 > /tmp/status", capture=True)
        assert _wait_health(stack.engine, name, "healthy") == "healthy"
    finally:
        stack.engine.docker("rm", "--force", name, check=False, capture=True)


def _wait_health(engine: DockerEngine, container: str, wanted: str, timeout: float = 30) -> str:
    def status() -> str:
        return engine.docker("inspect", "--format", "{{.State.Health.Status}}", container,
                             capture=True).stdout.decode().strip()

    return wait_for(lambda: status() == wanted and wanted, timeout, f"{container} {wanted}", interval=0.5)


def test_stop_lets_the_in_flight_request_finish_and_exits_0(stack):
    """Runs last: it stops web. The request is parked on a lock held on `notes` from outside, so
    it is still inside Gunicorn when `compose stop web` sends SIGTERM; Gunicorn must finish it
    within GUNICORN_GRACEFUL_TIMEOUT and exit 0, not be SIGKILLed (137)."""
    if not stack.cookies:
        credentials = {"email": f"e2e-{uuid.uuid4().hex[:12]}@example.com", "password": "correct horse battery"}
        stack.request("POST", "/api/auth/register", credentials)
        stack.request("POST", "/api/auth/login", credentials)
    result: dict[str, object] = {}

    def slow_request():
        try:
            result["response"] = stack.request("POST", "/api/notes", {"title": "in flight"}, timeout=60)
        except Exception as error:  # reported by the assertions below
            result["error"] = error
        result["finished"] = time.monotonic()

    web = stack.container_id("web")

    def terms_handled() -> int:
        logs = stack.engine.docker("logs", web, capture=True)
        return (logs.stdout + logs.stderr).count(b"Handling signal: term")

    before = terms_handled()
    locker = subprocess.Popen(stack.compose_command("exec", "-T", "db", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                                                    "-U", "flask", "-d", "flask"),
                              env=stack.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        locker.stdin.write("BEGIN; LOCK TABLE notes IN ACCESS EXCLUSIVE MODE;\n")
        locker.stdin.flush()
        wait_for(lambda: stack.sql("SELECT count(*) FROM pg_locks WHERE relation = 'notes'::regclass "
                                   "AND mode = 'AccessExclusiveLock' AND granted") == "1", 60, "the lock on notes")
        client = threading.Thread(target=slow_request)
        client.start()
        wait_for(lambda: stack.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND query LIKE 'INSERT INTO notes%'") == "1", 30, "the request waiting in Postgres")
        # From here the INSERT must be let go within DB_STATEMENT_TIMEOUT_MS (5 s), or it fails with a 503.
        stopper = subprocess.Popen(stack.compose_command("stop", "web"), env=stack.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: terms_handled() > before, 30, "SIGTERM reaching Gunicorn")
        assert client.is_alive(), result  # still parked on the lock while Gunicorn drains
    finally:
        locker.communicate("COMMIT;\n", timeout=60)
    client.join(30)
    output, _ = stopper.communicate(timeout=60)
    assert "error" not in result, result
    response = result["response"]
    assert response.status == 201, response.body
    assert stopper.returncode == 0, output
    assert stack.inspect("web", "{{.State.Status}} {{.State.ExitCode}}") == "exited 0"
