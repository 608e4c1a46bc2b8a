"""A real Prometheus (Debian's) scrapes the native stack: Postgres, Redis, Gunicorn under the
production launcher with 2 workers, and nginx in front, all on loopback. What it reads must be
exactly what the clients were answered, across worker restarts; a Postgres outage must show in
the readiness metric and turn the readiness alert's condition true; and the metrics must never
be served through nginx. Every wait is for a scrape or a state, with a bound."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
import yaml

from harness import REPO
from harness.prometheus import RULES, PrometheusServer
from harness.stack import NativeStack
from harness.wait import wait_for

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
# The answers that are not the test's own: the harness polls /health until Gunicorn is up.
HARNESS_ROUTES = '"/health"'


@pytest.fixture(scope="module")
def stack():
    # the nginx per-address limits lifted: every request here comes from 127.0.0.1
    with NativeStack(workers=2, load_test=True) as stack:
        yield stack


@pytest.fixture(scope="module")
def prometheus(stack):
    server = PrometheusServer({"web": (stack.gunicorn.metrics_url,)},
                              rule_files=(RULES / "recording.yml", RULES / "alerts.yml"))
    server.start()
    yield server
    server.close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Traffic:
    """Requests through nginx, and what each was answered, by route template, method and status."""

    def __init__(self, stack: NativeStack):
        self.stack = stack
        self.answered: Counter[tuple[str, str, str]] = Counter()

    def send(self, client, method: str, path: str, route: str, body=None) -> int:
        status = client.request(method, path, body).status
        self.answered[(route, method, str(status))] += 1
        return status

    def batch(self, number: int) -> None:
        anonymous, reader = self.stack.client(), self.stack.client()
        email = f"reader-{number}@example.com"
        assert self.send(reader, "POST", "/api/auth/register", "/api/auth/register",
                         {"email": email, "password": PASSWORD}) == 201
        assert self.send(reader, "POST", "/api/auth/login", "/api/auth/login",
                         {"email": email, "password": PASSWORD}) == 200
        for _ in range(3):
            assert self.send(reader, "GET", "/api/notes", "/api/notes") == 200  # the authenticated read
            assert self.send(anonymous, "GET", "/api/notes", "/api/notes") == 401
        assert self.send(reader, "GET", f"/api/notes/{900 + number}", "/api/notes/<int:note_id>") == 404
        assert self.send(anonymous, "POST", "/api/auth/register", "/api/auth/register", {"email": "nope"}) == 422
        for path in ("/api/nothing-here", f"/nothing/{number}"):
            assert self.send(anonymous, "GET", path, "unmatched") == 404
        assert self.send(anonymous, "GET", "/health/ready", "/health/ready") == 200
        # wrong passwords until the login limits answer 429 (LOGIN_FAILURES_PER_ACCOUNT, 10)
        for _ in range(30):
            if self.send(anonymous, "POST", "/api/auth/login", "/api/auth/login",
                         {"email": email, "password": "wrong password"}) == 429:
                break
        assert self.answered[("/api/auth/login", "POST", "429")] == number


def restart_every_worker(stack: NativeStack) -> None:
    """SIGKILL each worker in turn, and wait for the master to replace it: whatever they
    counted lives on only in their files."""
    def replaced(pid: int) -> bool:
        workers = stack.gunicorn.worker_pids()
        return pid not in workers and len(workers) == 2 and stack.gunicorn.healthy()

    for pid in stack.gunicorn.worker_pids():
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda pid=pid: replaced(pid), 30, f"worker {pid} replaced")


def test_promql_counts_exactly_the_answers_given_across_worker_restarts(stack, prometheus):
    traffic = Traffic(stack)
    traffic.batch(1)
    restart_every_worker(stack)
    traffic.batch(2)
    prometheus.wait_for_scrape("web", after=time.time())

    counted = prometheus.values(f'sum by (route, method, status) (http_requests_total{{route!={HARNESS_ROUTES}}})',
                                "route", "method", "status")
    assert counted == dict(traffic.answered)
    timed = prometheus.values(f'sum by (route) (http_request_duration_seconds_count{{route!={HARNESS_ROUTES}}})',
                              "route")
    by_route = Counter()
    for (route, _, _), count in traffic.answered.items():
        by_route[(route,)] += count
    assert timed == dict(by_route)
    assert prometheus.values("gunicorn_worker_restarts_total") == {(): 2}
    assert prometheus.values("gunicorn_workers") == {(): 2}
    assert prometheus.values("http_requests_in_flight") == {(): 0}
    # the rules load and evaluate: the login limits' 429s, as the recording rule reads them
    # (once two scrapes have held the series)
    wait_for(lambda: prometheus.query("job:login_limit_rejections:rate5m"), 30, "the login-limit recording rule")
    assert prometheus.values("sum(http_requests_total{route='/api/auth/login', status='429'})") == {(): 2}


def test_the_metrics_never_go_through_nginx_and_answer_on_their_port(stack, prometheus):
    client = stack.client()
    for method in ("GET", "HEAD"):
        assert client.request(method, "/metrics").status == 404
    assert client.request("GET", "/stub_status").status == 404

    status, body = get(stack.gunicorn.metrics_url)
    assert status == 200 and b"http_requests_total{" in body and b"app_build_info{" in body
    assert get(stack.gunicorn.metrics_url.replace("/metrics", "/api/notes"))[0] == 404  # nothing else there
    status, body = get(stack.nginx.status_url)  # nginx's own counters, on its internal listener
    assert status == 200 and body.startswith(b"Active connections:")


def test_every_dashboard_query_runs_on_the_real_prometheus(stack, prometheus):
    """deploy/grafana/flask-kit.json: each panel's PromQL is answered (series the stack does not
    run here, the exporters' and the backup's, answer empty), and the app's own have data."""
    # answers of its own, beyond the harness's health polls, whichever tests ran before it
    reader = stack.client()
    credentials = {"email": "dashboard@example.com", "password": PASSWORD}
    assert reader.request("POST", "/api/auth/register", credentials).status == 201
    assert reader.request("POST", "/api/auth/login", credentials).status == 200
    assert reader.request("GET", "/api/notes").status == 200
    board = json.loads((REPO / "deploy" / "grafana" / "flask-kit.json").read_text())
    queries = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    for expr in queries:
        prometheus.query(expr)  # raises unless Prometheus answers "success"
    for expr in ("job:http_request_duration_seconds:p99_5m", "max by (release, environment) (app_build_info)",
                 "min by (check) (readiness_check_ok)"):
        assert expr in queries
        wait_for(lambda expr=expr: prometheus.query(expr), 30, f"data for {expr}")


def readiness_alert_expression() -> str:
    (expr,) = [rule["expr"] for group in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
               for rule in group["rules"] if rule.get("alert") == "ReadinessFailing"]
    return expr


def test_a_postgres_outage_fails_readiness_in_the_metrics_and_the_alert(stack, prometheus):
    alert = readiness_alert_expression()
    prometheus.wait_for_scrape("web", after=time.time())
    assert prometheus.query(alert) == []
    assert prometheus.values('readiness_check_ok{check="postgres"}') == {(): 1}

    stack.postgres.stop()
    try:
        wait_for(lambda: prometheus.values('readiness_check_ok{check="postgres"}') == {(): 0}, 30,
                 "the postgres readiness metric at 0")
        failing = {series["metric"]["check"] for series in prometheus.query(alert)}
        wait_for(lambda: prometheus.query('ALERTS{alertname="ReadinessFailing", check="postgres"}'), 10,
                 "the readiness alert pending")
    finally:
        stack.postgres.start()

    assert failing == {"postgres", "migrations"}  # the schema cannot be read without the database
    assert prometheus.values('readiness_check_ok{check="redis"}') == {(): 1}
    wait_for(lambda: prometheus.query(alert) == [], 30, "readiness passing again")
