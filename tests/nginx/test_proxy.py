"""End to end, natively: client -> real nginx (TLS) -> real Gunicorn -> real PostgreSQL + Redis.

One stack per module (starting Gunicorn per test would triple the run time): a migrated
database, Gunicorn serving the real app plus a failing test route, and nginx running the
repo's nginx/ tree in the foreground. Everything is stopped by PID at teardown.
Clients connect to 127.0.0.1 only (from 127.0.0.1, or from 127.0.0.2 to be a second client
address), sending SNI and Host "localhost" (like curl --resolve).
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import REPO, VENV_BIN
from harness.https import SERVER_NAME, Client, Response, exchange, parse_response, read_all
from harness.nginx import NginxServer
from harness.process import free_port
from harness.servers import GunicornServer
from harness.wait import log_size, wait_for, wait_for_line

pytestmark = pytest.mark.slow

# The real app plus /_test/error (raises), from the test WSGI module.
TEST_APP = "tests.support.testing_wsgi:app"
MIB = 1024 * 1024

SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Permissions-Policy": "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
                          "microphone=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass
class Stack:
    nginx: NginxServer
    gunicorn: GunicornServer | None

    @property
    def cafile(self) -> str:
        return self.nginx.cafile

    @property
    def access_log(self) -> Path:
        return self.nginx.access_log

    def tls_context(self, verify: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile)
        if not verify:
            # for handshakes the server must refuse: the refusal must not be the client's
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def tls_socket(self, server_name: str | None = SERVER_NAME, verify: bool = True,
                   alpn: list[str] | None = None) -> ssl.SSLSocket:
        """A TLS connection to 127.0.0.1 with the given SNI (None sends none, like a client using the IP)."""
        context = self.tls_context(verify)
        if alpn:
            context.set_alpn_protocols(alpn)
        raw = socket.create_connection(("127.0.0.1", self.nginx.https_port), timeout=10)
        try:
            return context.wrap_socket(raw, server_hostname=server_name)
        except BaseException:
            raw.close()
            raise

    def https(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Response:
        return self.nginx.client().request(method, path, body, headers)

    def http(self, method: str, path: str, headers: dict | None = None) -> Response:
        return Client(self.nginx.http_port, https=False).request(method, path, headers=headers)

    def access_log_entries(self) -> list[dict]:
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def openssl(self, *args: str, send: str | None = None) -> subprocess.CompletedProcess:
        """s_client to nginx with SNI localhost; `send` is written once the handshake is done."""
        stdin = {"input": send} if send is not None else {"stdin": subprocess.DEVNULL}
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{self.nginx.https_port}", "-servername", SERVER_NAME,
             *args],
            capture_output=True, text=True, timeout=20, **stdin,
        )

    def https_with_sni(self, server_name: str | None, host: str, path: str = "/health") -> Response:
        """One HTTP/1.1 GET over TLS whose SNI (None: none) and Host header are chosen separately."""
        with self.tls_socket(server_name, verify=False) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            return Response(reply.status, reply.headers, reply.read())


def json_body(data) -> tuple[bytes, dict]:
    return json.dumps(data).encode(), {"Content-Type": "application/json"}


def assert_security_headers(response: Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get_all(name) == [value], f"{name} on {response.status}"
    assert "X-XSS-Protection" not in response.headers
    assert response.headers["Server"] == "nginx"  # server_tokens off: no version


def assert_nginx_json_error(response: Response, status: int, code: str) -> None:
    """An error nginx answered itself: the app's JSON shape, the security headers, one request id."""
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert (error["code"], error["details"]) == (code, {})
    assert error["message"]
    assert_security_headers(response)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert len(response.headers.get_all("X-Request-ID")) == 1


def wait_until_not_limited(stack: Stack) -> None:
    """Let the /api/ rate-limit bucket drain (20 burst at 10 r/s: about 2 s), bounded."""
    wait_for(lambda: stack.https("GET", "/api/nope").status != 429, 10, "rate limit to drain", interval=0.5)


def run_migrations(env: dict[str, str]) -> None:
    """The contract's one-off schema step, run exactly as operators run it."""
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", "db", "upgrade"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


@contextlib.contextmanager
def running_nginx(upstream_port: int, gunicorn: GunicornServer | None = None,
                  other_upstreams: tuple[str, ...] = ()) -> Iterator[Stack]:
    nginx = NginxServer(upstream_port, other_upstreams=other_upstreams)
    try:
        nginx.start()
        yield Stack(nginx, gunicorn)
    finally:
        nginx.close()


@pytest.fixture(scope="module")
def stack(postgres_server, redis_server) -> Iterator[Stack]:
    database = f"nginx_e2e_{uuid.uuid4().hex[:8]}"
    app_env = {
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": postgres_server.create_database(database),
        "REDIS_URL": redis_server.url,
        # exactly one proxy in front: nginx
        "PROXY_FIX_HOPS": "1",
    }
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(postgres_server.drop_database, database)
        run_migrations(app_env)
        gunicorn = GunicornServer(app_env, TEST_APP)
        cleanup.callback(gunicorn.close)
        gunicorn.start()
        yield cleanup.enter_context(running_nginx(gunicorn.port, gunicorn))


# --- HTTP port ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_plain_http_is_redirected_to_https_with_308(stack, method):
    response = stack.http(method, "/api/notes?page=2")

    assert response.status == 308  # keeps the method, unlike 301
    assert response.headers["Location"] == "https://localhost/api/notes?page=2"


def test_acme_challenge_is_served_over_plain_http(stack):
    found = stack.http("GET", "/.well-known/acme-challenge/token-123")
    missing = stack.http("GET", "/.well-known/acme-challenge/other")

    assert (found.status, found.body) == (200, b"token-123.thumbprint")
    assert missing.status == 404  # answered from the webroot, not redirected


# --- Unknown names get nothing --------------------------------------------------------------


def test_unknown_host_on_http_gets_no_response(stack):
    with socket.create_connection(("127.0.0.1", stack.nginx.http_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert read_all(sock) == b""  # 444: closed without a byte


def test_unknown_host_over_https_gets_no_response(stack):
    with stack.tls_socket() as sock:  # SNI localhost, so the handshake succeeds
        sock.sendall(b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert read_all(sock) == b""


@pytest.mark.parametrize("server_name", ["evil.example", None], ids=["unknown-sni", "no-sni"])
def test_tls_without_our_name_completes_then_gets_no_response(stack, server_name):
    """Clients that connect by IP (no SNI) still get TLS, so scanners can check it; an unknown
    Host then gets the 444."""
    with stack.tls_socket(server_name, verify=False) as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_all(sock) == b""


# --- Load balancers probe by address --------------------------------------------------------

PROBES = [  # (scheme, SNI, Host): what balancers send to an instance's address
    ("http", None, "127.0.0.1"),          # the default: Host is the address
    ("https", None, "127.0.0.1"),         # HTTPS checks send no SNI
    ("https", None, "127.0.0.1:8443"),
    ("https", None, SERVER_NAME),         # a Host set to the name, still without SNI
    ("http", None, SERVER_NAME),          # a TLS-terminating balancer probing port 80 by name
    ("https", SERVER_NAME, "10.0.0.11"),  # SNI by name, Host an address
]


def probe(stack: Stack, scheme: str, server_name: str | None, host: str, path: str) -> bytes:
    """One GET as a balancer sends it: everything nginx answered, b"" if it closed without one."""
    port = stack.nginx.https_port if scheme == "https" else stack.nginx.http_port
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    return exchange(port, request, tls=scheme == "https", server_name=server_name)


@pytest.mark.parametrize(("scheme", "server_name", "host"), PROBES)
@pytest.mark.parametrize("path", ["/health", "/health/ready"])
def test_a_probe_by_address_gets_the_apps_health_answer(stack, scheme, server_name, host, path):
    """As by name: the app's status and application/health+json body, no redirect, no 421."""
    by_name = stack.https("GET", path)
    response = parse_response(probe(stack, scheme, server_name, host, path))

    assert response.status == by_name.status == 200, response.body
    assert response.headers["Content-Type"] == "application/health+json"
    assert json.loads(response.body)["status"] == by_name.json()["status"] == "pass"


@pytest.mark.parametrize(("scheme", "server_name", "host"), [p for p in PROBES if p[2] != SERVER_NAME])
@pytest.mark.parametrize("path", ["/", "/api/notes", "/static/robots.txt", "/health/", "/healthz",
                                  "/health/../api/notes"])
def test_anything_else_by_address_gets_no_answer(stack, scheme, server_name, host, path):
    assert probe(stack, scheme, server_name, host, path) == b""


def test_by_name_over_http_only_the_probes_skip_the_redirect(stack):
    assert stack.http("GET", "/health").status == 200
    assert stack.http("GET", "/health/ready").status == 200
    assert stack.http("GET", "/api/notes").status == 308


def test_an_unready_instance_answers_503_to_a_probe_by_address(database_url):
    """Readiness by address tells the truth: Redis unreachable, 503 with the failing check."""
    env = {"APP_ENV": "testing", "DATABASE_URL": database_url,
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "HEALTH_CACHE_TTL": "0"}
    gunicorn = GunicornServer(env)
    try:
        gunicorn.start()
        with running_nginx(gunicorn.port, gunicorn) as unready:
            answers = [parse_response(probe(unready, scheme, None, "127.0.0.1", "/health/ready"))
                       for scheme in ("http", "https")]
    finally:
        gunicorn.close()

    for response in answers:
        assert response.status == 503, response.body
        assert response.headers["Content-Type"] == "application/health+json"
        assert json.loads(response.body)["checks"]["redis:responseTime"][0]["status"] == "fail"


# --- SNI and Host name the same host --------------------------------------------------------


@pytest.mark.parametrize("server_name", ["evil.example", None], ids=["other-sni", "no-sni"])
def test_host_that_differs_from_the_sni_gets_421(stack, server_name):
    """Our Host over a TLS connection set up for another name (or for no name, as by IP) is
    misdirected: 421 tells the client to use a connection for that name."""
    response = stack.https_with_sni(server_name, SERVER_NAME, "/api/notes")

    assert_nginx_json_error(response, 421, "misdirected_request")


@pytest.mark.parametrize(("server_name", "host"), [("LocalHost", "localhost"), ("localhost", "LOCALHOST")])
def test_sni_and_host_are_compared_without_case(stack, server_name, host):
    # $host is lowercased by nginx, $ssl_server_name is as sent; DNS names ignore case.
    response = stack.https_with_sni(server_name, host)

    assert response.status == 200, response.body


# --- TLS ------------------------------------------------------------------------------------


def test_tls_1_1_is_refused_by_the_server(stack):
    # SECLEVEL=0 lets Debian's OpenSSL offer TLS 1.1 at all; then the refusal is the server's
    # protocol_version alert (70), not the client's "no protocols available".
    result = stack.openssl("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "no protocols available" not in output
    assert "alert protocol version" in output and "SSL alert number 70" in output


def test_tls_1_3_is_accepted(stack):
    result = stack.openssl("-tls1_3", "-brief", "-CAfile", stack.cafile, "-verify_return_error",
                           "-verify_hostname", SERVER_NAME)

    assert result.returncode == 0, result.stderr
    assert "Protocol version: TLSv1.3" in result.stderr


def test_tls_1_2_offers_only_aead_suites_and_no_tickets(stack):
    aead = stack.openssl("-tls1_2", "-CAfile", stack.cafile, "-verify_return_error")
    cbc = stack.openssl("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")

    assert aead.returncode == 0, aead.stderr
    assert re.search(r"Cipher is ECDHE-ECDSA-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)", aead.stdout)
    assert "TLS session ticket" not in aead.stdout  # ssl_session_tickets off
    assert cbc.returncode != 0
    assert "SSL alert number 40" in cbc.stdout + cbc.stderr  # the server's handshake_failure


def ticket_bytes(session_text: str) -> int:
    """Length of the ticket in `openssl sess_id -text` output (hex dump, 16 bytes a line)."""
    dump = session_text.split("TLS session ticket:\n", 1)[1].split("\n\n", 1)[0]
    return sum(len(re.findall(r"[0-9a-f]{2}", line[11:58])) for line in dump.splitlines())


def test_tls_1_3_tickets_are_cache_ids_and_resume_through_the_cache(stack, tmp_path):
    """ssl_session_tickets off: TLS 1.3 still gets tickets, but OpenSSL's stateful kind, a 32-byte
    id of a shared-cache entry (a stateless ticket, encrypted with the ticket key, is ~240 bytes);
    resuming with it works because the cache holds the session (snippets/tls.conf)."""
    session = tmp_path / "session.pem"
    request = f"GET /health HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n"

    first = stack.openssl("-tls1_3", "-ign_eof", "-sess_out", str(session), send=request)
    resumed = stack.openssl("-tls1_3", "-ign_eof", "-sess_in", str(session), send=request)

    assert first.returncode == 0, first.stderr
    assert "New, TLSv1.3" in first.stdout
    text = subprocess.run(["openssl", "sess_id", "-in", str(session), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "TLS session ticket lifetime hint: 86400 (seconds)" in text  # ssl_session_timeout 1d
    assert ticket_bytes(text) == 32
    assert resumed.returncode == 0, resumed.stderr
    assert "Reused, TLSv1.3" in resumed.stdout
    assert "HTTP/1.1 200" in resumed.stdout


def test_http2_is_negotiated(stack):
    with stack.tls_socket(alpn=["h2", "http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "h2"


# --- Headers on every response --------------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [
    ("/health", 200),                # the app, success
    ("/api/nope", 404),              # the app, client error
    ("/_test/error", 500),           # the app, unhandled exception
    ("/static/robots.txt", 200),     # nginx itself, from disk
    ("/static/missing.txt", 404),    # nginx's own error page
])
def test_security_headers_on_every_response(stack, path, status):
    response = stack.https("GET", path)

    assert response.status == status
    assert_security_headers(response)
    assert len(response.headers.get_all("X-Request-ID")) == 1


def test_error_from_the_app_passes_through_unchanged(stack):
    response = stack.https("GET", "/_test/error")

    assert response.status == 500
    assert response.json()["error"]["code"] == "internal_error"


# The Allow header of nginx's own 405 outside /static/ (a map in the site template).
NGINX_ALLOW = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"


@pytest.fixture
def unreadable_static_file(stack) -> Iterator[str]:
    """A file under /static/ that nginx's unprivileged workers may not read; yields its URL path."""
    path = stack.nginx.prefix / "static" / "private.txt"
    path.write_text("secret")
    path.chmod(0)
    yield "/static/private.txt"
    path.unlink()


@pytest.mark.parametrize(("method", "path", "status", "code", "allow"), [
    ("TRACE", "/", 405, "method_not_allowed", NGINX_ALLOW),          # nginx refuses TRACE on every path
    ("TRACE", "/api/notes", 405, "method_not_allowed", NGINX_ALLOW),
    ("POST", "/static/robots.txt", 405, "method_not_allowed", "GET, HEAD"),
    ("DELETE", "/static/robots.txt", 405, "method_not_allowed", "GET, HEAD"),
    ("GET", "/static/missing.txt", 404, "not_found", None),         # JSON despite the .txt name
    ("GET", "/static/", 403, "forbidden", None),                     # a directory: no index, no listing
])
def test_nginx_errors_are_json_in_the_app_shape(stack, method, path, status, code, allow):
    response = stack.https(method, path)

    assert_nginx_json_error(response, status, code)
    assert response.headers.get_all("Allow") == ([allow] if allow else None)


@pytest.mark.parametrize(("port", "request_bytes", "status", "code"), [
    ("http", b"GARBAGE\r\n\r\n", 400, "bad_request"),  # no URI: nginx cannot use a named location
    ("http", b"GET / HTTP/1.1\r\n\r\n", 400, "bad_request"),  # HTTP/1.1 without Host
    ("https", b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n", 400, "bad_request"),
    ("https", b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 400, "bad_request"),
    ("https", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, "uri_too_long"),
    ("http", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414, "uri_too_long"),
    ("https", b"POST /api/notes HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
     400, "bad_request"),
], ids=["garbage", "no-host", "bad-header", "header-over-8k", "uri-over-8k", "uri-over-8k-by-address",
        "broken-chunk"])
def test_nginx_refusals_of_a_broken_request_are_json(stack, port, request_bytes, status, code):
    """Requests nginx cannot pass on, answered by nginx itself in the API's shape (HTTP/1.1: over
    HTTP/2 the client's library refuses to send most of these)."""
    if port == "https":
        sock = stack.tls_socket()
    else:
        sock = socket.create_connection(("127.0.0.1", stack.nginx.http_port), timeout=10)
    with sock:
        sock.sendall(request_bytes)
        response = parse_response(read_all(sock))

    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body)["error"]["code"] == code


def test_a_body_not_sent_in_time_is_cut_off_without_an_answer(stack):
    """client_body_timeout (10 s) bounds a slow sender. nginx answers no 408 there (it closes a
    timed-out connection, with a reset: reset_timedout_connection), so there is no JSON to send."""
    with stack.tls_socket() as sock:
        sock.sendall(b"POST /api/notes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        sock.settimeout(10 + 10)  # past it, recv raises and the test fails
        assert read_all(sock) == b""


def test_unreadable_static_file_is_a_json_403(stack, unreadable_static_file):
    response = stack.https("GET", unreadable_static_file)

    assert_nginx_json_error(response, 403, "forbidden")


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/api/nope", 404), ("DELETE", "/health", 405)])
def test_app_errors_with_the_same_statuses_pass_through(stack, method, path, status):
    # error_page does not touch proxied responses (proxy_intercept_errors off): the app's own
    # 404 and 405 reach the client as Gunicorn sent them, with the app's Allow, not nginx's.
    direct = Client(stack.gunicorn.port, https=False).request(method, path)
    proxied = stack.https(method, path)

    assert direct.status == status
    assert (proxied.status, proxied.json()) == (direct.status, direct.json())
    assert proxied.headers.get_all("Allow") == direct.headers.get_all("Allow")
    assert len(proxied.headers.get_all("X-Request-ID")) == 1
    assert_security_headers(proxied)


def test_static_files_are_served_by_nginx(stack):
    response = stack.https("GET", "/static/robots.txt")

    assert response.body == b"User-agent: *\nDisallow:\n"
    assert response.headers["Cache-Control"] == "max-age=86400"  # `expires 1d`, not Flask's


# --- Limits ---------------------------------------------------------------------------------


def test_body_over_one_mib_is_refused_by_nginx(stack):
    body, headers = json_body({"title": "t", "body": "x" * MIB})

    response = stack.https("POST", "/api/notes", body=body, headers=headers)

    assert response.status == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert_security_headers(response)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_body_of_exactly_one_mib_reaches_the_app(stack):
    # nginx's limit equals the app's MAX_CONTENT_LENGTH: a body at the limit gets through,
    # and the app (not logged in) answers.
    response = stack.https("POST", "/api/notes", body=b"x" * MIB, headers={"Content-Type": "application/json"})

    assert response.status != 413
    assert response.json()["error"]["code"] in ("unauthenticated", "bad_request", "validation_failed")


# limit_conn in nginx.conf: requests in progress per client address.
REQUESTS_PER_ADDRESS = 64


def hold_request(stack: Stack) -> ssl.SSLSocket:
    """A request nginx has started but cannot finish: headers sent, the body announced but one
    byte of it sent, so nginx waits for the rest (client_body_timeout, 10 s, between reads)
    before it proxies anything. limit_conn counts it from the moment its headers are read."""
    sock = stack.tls_socket()
    try:
        sock.sendall(f"POST /_held HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100\r\n\r\n{".encode())
    except BaseException:
        sock.close()
        raise
    return sock


def test_requests_in_progress_per_address_are_limited_with_429(stack):
    """One address holding requests open gets 429 beyond the limit; another address does not.
    Plain TLS connections with one request each, so each is exactly one limit_conn count (over
    HTTP/2 each stream would count the same way). Bounded: REQUESTS_PER_ADDRESS sockets, waits
    of at most 10 s, all well inside client_body_timeout."""
    def limited() -> Response | None:
        response = stack.https("GET", "/health")
        return response if response.status == 429 else None

    error_log_start = log_size(stack.nginx.stderr_log)
    held: list[ssl.SSLSocket] = []
    try:
        held.extend(hold_request(stack) for _ in range(REQUESTS_PER_ADDRESS - 1))
        below_limit = stack.https("GET", "/health")  # the last one the limit allows
        held.append(hold_request(stack))
        # nginx reads the last held request's headers when it gets to them: poll until it counts.
        rejected = wait_for(limited, 10, "a 429 with the held requests at the limit", interval=0.1)
        other_address = stack.nginx.client(source="127.0.0.2").request("GET", "/health")
    finally:
        for sock in held:
            sock.close()

    assert below_limit.status == 200
    assert_nginx_json_error(rejected, 429, "too_many_requests")
    assert rejected.json()["error"]["message"] == "Too many requests in progress from this address, retry later."
    assert rejected.headers["Retry-After"] == "1"
    assert other_address.status == 200
    logged = wait_for_line(stack.nginx.stderr_log, 'limiting connections by zone "addr"', 5, error_log_start)
    assert "[warn]" in logged  # limit_conn_log_level
    # Closed, the held requests stop counting.
    wait_for(lambda: stack.https("GET", "/health").status == 200, 10, "the held requests to be released",
             interval=0.1)


# --- Request id -----------------------------------------------------------------------------


def wait_for_log(read, predicate, what: str):
    found: list = []

    def seen() -> bool:
        found[:] = [entry for entry in read() if predicate(entry)]
        return bool(found)

    wait_for(seen, 10, what)
    return found


def gunicorn_entries(stack: Stack) -> list[dict]:
    entries = []
    for line in stack.gunicorn.log_lines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def test_client_request_id_reaches_the_app_logs_and_the_response(stack):
    request_id = f"e2e-{uuid.uuid4().hex}"

    response = stack.https("GET", "/api/nope", headers={"X-Request-ID": request_id})

    assert response.headers.get_all("X-Request-ID") == [request_id]  # once: nginx does not add a second
    app_lines = wait_for_log(lambda: gunicorn_entries(stack), lambda e: e.get("request_id") == request_id,
                             "the app's log line")
    assert app_lines[0]["status"] == 404
    nginx_lines = wait_for_log(stack.access_log_entries, lambda e: e["request_id"] == request_id,
                               "nginx's access log line")
    assert nginx_lines[0]["status"] == 404


@pytest.mark.parametrize("sent", [None, "has spaces and !"], ids=["absent", "malformed"])
def test_missing_or_malformed_request_id_is_generated_by_nginx(stack, sent):
    headers = {"X-Request-ID": sent} if sent else {}

    response = stack.https("GET", "/api/nope", headers=headers)

    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nginx's $request_id, adopted by the app
    wait_for_log(lambda: gunicorn_entries(stack), lambda e: e.get("request_id") == request_id, "the app's log line")
    wait_for_log(stack.access_log_entries, lambda e: e["request_id"] == request_id, "nginx's access log line")


def test_access_log_is_json_with_upstream_timing_and_skips_health_checks(stack):
    stack.https("GET", "/health")
    stack.https("GET", "/health/ready")
    marker = f"marker-{uuid.uuid4().hex}"
    stack.https("GET", "/api/nope", headers={"X-Request-ID": marker})

    entries = wait_for_log(stack.access_log_entries, lambda e: e["request_id"] == marker, "the marker line")
    entry = entries[0]
    assert entry["upstream_addr"] == f"127.0.0.1:{stack.gunicorn.port}"
    assert float(entry["upstream_response_time"]) >= 0
    assert entry["ssl_protocol"] in ("TLSv1.2", "TLSv1.3")
    assert not [e for e in stack.access_log_entries() if re.fullmatch(r"/health(/ready)?(\?.*)?", e["uri"])]


# --- The application through the proxy ------------------------------------------------------


def test_register_login_and_notes_through_nginx(stack):
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    credentials, headers = json_body({"email": email, "password": "correct horse battery staple"})

    assert stack.https("POST", "/api/auth/register", credentials, headers).status == 201
    login = stack.https("POST", "/api/auth/login", credentials, headers)
    assert login.status == 200
    set_cookie = login.headers["Set-Cookie"]
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie
    cookie = {"Cookie": set_cookie.split(";", 1)[0]}

    note, _ = json_body({"title": "Through nginx", "body": "TLS all the way"})
    created = stack.https("POST", "/api/notes", note, {**headers, **cookie})
    listed = stack.https("GET", "/api/notes", headers=cookie)

    assert created.status == 201, created.body
    assert listed.status == 200
    assert [item["title"] for item in listed.json()["items"]] == ["Through nginx"]
    assert_security_headers(listed)


def test_app_sees_the_client_through_one_trusted_hop(stack):
    # nginx replaces a forged X-Forwarded-For, and ProxyFix (PROXY_FIX_HOPS=1) takes nginx's value.
    request_id = f"xff-{uuid.uuid4().hex}"
    stack.https("GET", "/api/nope", headers={"X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.9"})

    line = wait_for_log(lambda: gunicorn_entries(stack), lambda e: e.get("request_id") == request_id,
                        "the app's log line")[0]
    assert line["remote_addr"] == "127.0.0.1"


def test_json_is_gzipped_when_the_client_accepts_it(stack):
    plain = stack.https("GET", "/api/openapi.json")
    compressed = stack.https("GET", "/api/openapi.json", headers={"Accept-Encoding": "gzip"})

    assert plain.headers["Content-Type"].startswith("application/json")
    assert "Content-Encoding" not in plain.headers
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in compressed.headers["Vary"]
    assert json.loads(gzip.decompress(compressed.body)) == plain.json()
    assert len(compressed.body) < len(plain.body)


def test_upstream_down_gets_nginx_json_503_and_the_log_keeps_the_cause():
    # Nothing listens on the upstream port: nginx answers itself (502 -> error_page -> 503).
    with running_nginx(upstream_port=free_port()) as down:
        response = down.https("GET", "/api/notes")
        entries = wait_for_log(down.access_log_entries, lambda e: e["uri"] == "/api/notes", "the access log line")

    assert response.status == 503
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "service_unavailable"
    assert_security_headers(response)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert (entries[0]["status"], entries[0]["upstream_status"]) == (503, "502")


def test_a_request_that_reached_no_replica_goes_once_more_then_gets_the_json_503():
    """"no live upstreams": every replica is marked failed, or (in production, where nginx
    re-resolves them) the list changed under the request. Nothing was sent, so nginx sends it
    once more, a POST with its body too; when that also reaches none, the JSON 503, not a loop."""
    dead = (f"127.0.0.1:{free_port()}",)
    with running_nginx(free_port(), other_upstreams=dead) as down:
        # the first request marks both replicas failed (refused), the next find none live
        answers = [down.https(method, "/api/notes", body) for method, body in
                   (("GET", None), ("GET", None), ("POST", b'{"title": "x"}'))]
        entries = wait_for_log(down.access_log_entries,
                               lambda e: e["uri"] == "/api/notes" and e["method"] == "POST", "the POST's log line")
        lines = [e for e in down.access_log_entries() if e["uri"] == "/api/notes"]

    assert [a.status for a in answers] == [503] * 3, [(a.status, a.body[:200]) for a in answers]
    assert all(a.json()["error"]["code"] == "service_unavailable" for a in answers)
    assert all(a.headers["Content-Type"] == "application/json" for a in answers)
    # each request's second try ends at the upstream's name: none was live then either
    assert [line["status"] for line in lines] == [503] * 3
    assert all(line["upstream_addr"].endswith(" : app") for line in lines[1:]), lines
    assert entries[0]["upstream_addr"].count(" : ") == 1, entries  # once more, not a loop


def test_a_replica_that_never_completes_the_handshake_holds_a_request_500_ms_not_seconds(stack):
    """A crashed replica's old address: SYNs go unanswered. Here a listener whose one-slot accept
    queue is full, which makes Linux drop them. nginx gives up connecting after 500 ms
    (proxy_connect_timeout, snippets/proxy.conf) and passes the request to the next replica,
    having sent nothing, so even a POST is safe to pass on."""
    hole = socket.create_server(("127.0.0.1", 0), backlog=0)
    hole_port = hole.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(hole.getsockname())
    try:
        with running_nginx(stack.gunicorn.port, stack.gunicorn,
                           other_upstreams=(f"127.0.0.1:{hole_port}",)) as two:
            timings = []
            for _ in range(4):  # round robin: at least one of them is sent to the hole first
                started = time.monotonic()
                timings.append((two.https("GET", "/health").status, time.monotonic() - started))
            timed_out = wait_for_log(lambda: two.nginx.stderr_log.read_text().splitlines(),
                                     lambda line: "upstream timed out" in line, "nginx's connect timeout")
    finally:
        for sock in (*fillers, hole):
            sock.close()

    assert [status for status, _ in timings] == [200] * 4
    assert max(seconds for _, seconds in timings) < 3, timings  # a generous bound on the 500 ms
    assert "while connecting to upstream" in timed_out[0] and f":{hole_port}" in timed_out[0]


# --- Rate limit (last: it drains the bucket before returning) -------------------------------


def test_api_burst_is_limited_with_429(stack):
    statuses = []
    # one kept-alive connection: a handshake per request (60 ms on a loaded machine) would let
    # the 10 r/s refill keep pace with 50 requests, and the burst of 20 would never run out
    client = stack.nginx.client(keep_alive=True)
    try:
        for _ in range(50):
            limited = client.request("GET", "/api/nope")
            statuses.append(limited.status)
            if limited.status == 429:
                break
        assert limited.status == 429, statuses
        assert limited.json()["error"]["code"] == "too_many_requests"
        # limit_req's message, not limit_conn's
        assert limited.json()["error"]["message"] == "Rate limit exceeded, retry later."
        assert limited.headers["Retry-After"] == "1"
        assert_security_headers(limited)  # the 429 location re-includes the headers
        assert stack.https("GET", "/health").status == 200  # health checks are never limited
    finally:
        client.close()
        wait_until_not_limited(stack)
