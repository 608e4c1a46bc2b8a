"""Behind a TLS-terminating balancer: Debian's HAProxy ends TLS and forwards plain HTTP to the
repo's nginx (port 80), which trusts it through NGINX_TRUSTED_PROXIES, in front of the real app.

HAProxy's connections leave from 127.0.0.3, the one trusted address; clients connect from
127.0.0.5 (through HAProxy) or 127.0.0.1 (straight to nginx, untrusted).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.balancer import HaproxyServer
from harness.https import Client, tls_context
from harness.nginx import NginxServer
from harness.servers import GunicornServer
from harness.wait import wait_for

pytestmark = pytest.mark.slow

CLIENT = "127.0.0.5"
BALANCER = "127.0.0.3"
CREDENTIALS = {"email": "ada@example.com", "password": "correct horse battery"}


@dataclass
class Edge:
    gunicorn: GunicornServer
    nginx: NginxServer
    haproxy: HaproxyServer

    def through_balancer(self) -> Client:
        return Client(self.haproxy.port, tls_context(self.nginx.cafile), source=CLIENT)

    def app_access_lines(self) -> list[dict]:
        lines = [json.loads(line) for line in self.gunicorn.log_lines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "gunicorn.access"]


@pytest.fixture(scope="module")
def edge(postgres_server, migrated_template, redis_server) -> Iterator[Edge]:
    database = f"balancer_{secrets.token_hex(4)}"
    env = {"APP_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(48), "PROXY_FIX_HOPS": "1",
           "DATABASE_URL": postgres_server.create_database(database, template=migrated_template),
           "REDIS_URL": redis_server.url}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(postgres_server.drop_database, database)
        gunicorn = GunicornServer(env)
        cleanup.callback(gunicorn.close)
        gunicorn.start()
        nginx = NginxServer(gunicorn.port, trusted_proxies=BALANCER)
        cleanup.callback(nginx.close)
        nginx.start()
        certs = Path(nginx.cafile).parent
        haproxy = HaproxyServer(nginx.http_port, certs / "fullchain.pem", certs / "privkey.pem", source=BALANCER)
        cleanup.callback(haproxy.close)
        haproxy.start()
        yield Edge(gunicorn, nginx, haproxy)


def test_the_balancers_check_by_address_marks_nginx_up(edge):
    """HTTP/1.0 to port 80 with no Host: the probe every managed balancer sends first."""
    wait_for(lambda: edge.haproxy.server_status() == "UP", 15, "HAProxy's check passing")


def test_https_ends_at_the_balancer_without_a_redirect_loop(edge):
    client = edge.through_balancer()

    response = client.request("GET", "/api/auth/me")

    assert response.status == 401, response.body  # the app's answer, not nginx's 308 back to https
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_cookies_stay_secure_and_the_app_sees_the_real_client(edge):
    client = edge.through_balancer()

    assert client.request("POST", "/api/auth/register", CREDENTIALS).status in (201, 409)
    login = client.request("POST", "/api/auth/login", CREDENTIALS, headers={"X-Request-ID": "via-balancer"})

    assert login.status == 200
    assert "Secure" in login.headers["Set-Cookie"]
    (line,) = wait_for(lambda: [a for a in edge.app_access_lines() if a.get("request_id") == "via-balancer"], 10,
                       "the login's access line")
    assert line["remote_addr"] == CLIENT
    nginx_lines = [json.loads(raw) for raw in edge.nginx.access_log.read_text().splitlines()]
    assert [e["remote_addr"] for e in nginx_lines if e["request_id"] == "via-balancer"] == [CLIENT]


def test_forwarded_headers_from_anyone_else_are_ignored(edge):
    """Straight to nginx from an untrusted address: a forged X-Forwarded-Proto is still plain
    HTTP (redirected), and a forged X-Forwarded-For is not the client's address."""
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    plain = Client(edge.nginx.http_port, https=False).request("GET", "/api/auth/me", headers=forged)
    direct = edge.nginx.client().request("GET", "/api/auth/me", headers={**forged, "X-Request-ID": "forged"})

    assert plain.status == 308
    assert direct.status == 401
    (line,) = wait_for(lambda: [a for a in edge.app_access_lines() if a.get("request_id") == "forged"], 10,
                       "the forged request's access line")
    assert line["remote_addr"] == "127.0.0.1"
