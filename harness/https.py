"""HTTP(S) to a server on loopback under the site's name: the TCP connection goes to a
127.0.0.0/8 address, while SNI and Host carry the name nginx serves (like curl --resolve).

Optionally from a chosen source address (127.0.0.2, 127.0.0.3, ...), so several "clients"
on one machine look like different peers to nginx's per-address limits.
"""

from __future__ import annotations

import http.client
import io
import json
import select
import socket
import ssl
from dataclasses import dataclass, field
from email.message import Message

SERVER_NAME = "localhost"


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    def json(self):
        return json.loads(self.body)


class LoopbackHTTPSConnection(http.client.HTTPSConnection):
    """TLS to `address`:port with SNI and certificate check for `host` (the server name)."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext, address: str = "127.0.0.1",
                 source: str | None = None, timeout: float = 10):
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.source = source

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout,
                                        source_address=(self.source, 0) if self.source else None)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class LoopbackHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to `address`:port with Host `host`."""

    def __init__(self, host: str, port: int, *, address: str = "127.0.0.1", source: str | None = None,
                 timeout: float = 10):
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.source = source

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout,
                                             source_address=(self.source, 0) if self.source else None)


def tls_context(cafile: str | None = None, cadata: str | None = None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile, cadata=cadata)


@dataclass
class Client:
    """One user agent: a server name and port, a cookie jar, and (optionally) one keep-alive
    connection reused across requests. `https=False` speaks plain HTTP to the same name."""

    port: int
    context: ssl.SSLContext | None = None
    server_name: str = SERVER_NAME
    source: str | None = None
    https: bool = True
    timeout: float = 10
    keep_alive: bool = False
    resend: bool = False
    cookies: dict[str, str] = field(default_factory=dict)
    _connection: http.client.HTTPConnection | None = None

    def connection(self) -> http.client.HTTPConnection:
        if self.https:
            return LoopbackHTTPSConnection(self.server_name, self.port, context=self.context, source=self.source,
                                           timeout=self.timeout)
        return LoopbackHTTPConnection(self.server_name, self.port, source=self.source, timeout=self.timeout)

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> Response:
        """Send one request; a dict or list body goes as JSON. Cookies are sent and kept.

        A kept-alive connection that the server closed while idle fails before any answer. A
        strict client (the default, as Python's http.client and Go's net/http for a POST) raises
        that failure, so a load test counts it. With `resend`, the request is sent once more on
        a new connection, as a browser does, if it is safe to repeat (GET, HEAD, OPTIONS, or a
        write carrying an Idempotency-Key); only a test of that behaviour asks for it."""
        headers = dict(headers or {})
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        repeatable = method in ("GET", "HEAD", "OPTIONS") or "Idempotency-Key" in headers
        self._connection = self._idle_connection()
        reused = self._connection is not None
        try:
            response = self._send(method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not (self.resend and reused and repeatable):
                raise
            response = self._send(method, path, body, headers)  # on a new connection
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            cookie_value = rest.split(";", 1)[0]
            if cookie_value and "max-age=0" not in value.lower():
                self.cookies[name.strip()] = cookie_value
            else:
                self.cookies.pop(name.strip(), None)
        return response

    def _idle_connection(self) -> http.client.HTTPConnection | None:
        """The kept-alive connection, unless the server has closed it while it was idle (its
        socket is readable: an EOF, or bytes nobody asked for), as urllib3 checks before reuse.
        That is not a resend: the request has not been sent. Only a close racing the request
        is left, and that one fails."""
        connection, self._connection = self._connection, None
        if connection is not None and connection.sock is not None \
                and select.select([connection.sock], [], [], 0)[0]:
            connection.close()
            return None
        return connection

    def _send(self, method: str, path: str, body: bytes | None, headers: dict) -> Response:
        connection, self._connection = self._connection or self.connection(), None
        try:
            connection.request(method, path, body=body, headers=headers)
            reply = connection.getresponse()
            response = Response(reply.status, reply.headers, reply.read())
        except BaseException:
            connection.close()
            raise
        if self.keep_alive and not reply.will_close:
            self._connection = connection
        else:
            connection.close()
        return response

    def close(self) -> None:
        if self._connection:
            self._connection.close()
            self._connection = None


def read_all(sock: socket.socket) -> bytes:
    """Everything a server sends before it closes; a reset (nginx's 444 with
    reset_timedout_connection) is just as final."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def exchange(port: int, request: bytes, *, tls: bool, server_name: str | None = None, address: str = "127.0.0.1",
             timeout: float = 10) -> bytes:
    """Send raw request bytes on a new connection, and return every byte of the answer (b"" for
    none): what a load balancer's probe sees. Over TLS, SNI is `server_name` (None: none, as by
    address), and the certificate is not checked, as balancers do not check it."""
    sock = socket.create_connection((address, port), timeout=timeout)
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            sock = context.wrap_socket(sock, server_hostname=server_name)
        except BaseException:
            sock.close()
            raise
    with sock:
        sock.sendall(request)
        return read_all(sock)


def parse_response(answer: bytes) -> Response:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = http.client.parse_headers(io.BytesIO(("\r\n".join(header_lines) + "\r\n\r\n").encode()))
    return Response(int(status_line.split()[1]), headers, body)
