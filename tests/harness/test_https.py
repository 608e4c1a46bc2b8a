"""harness.https.Client against plain-HTTP servers that end keep-alive connections: one that
hangs up on the second request of a connection without answering it (the race at an nginx
reload), one that closes each connection while it is idle (nginx's keepalive_timeout)."""

import http.client
import socket
import threading

import pytest

from harness.https import Client
from harness.wait import wait_for

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: session=abc; Path=/\r\n\r\nok"


def serving(answer_second: bool):
    """A loopback server answering the first request of each connection. The second it reads
    and hangs up on (answer_second=False), or, closing each connection once it has answered,
    it never sees one (True). Yields (port, served: one entry per answer, closed: one per
    closed connection)."""
    listener = socket.create_server(("127.0.0.1", 0))
    served, closed = [], []

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                if connection.recv(65536):
                    # counted before answering: the client may read the answer and assert first
                    served.append(1)
                    connection.sendall(ANSWER)
                    if not answer_second:
                        connection.recv(65536)  # the next request: no answer, the connection ends
            closed.append(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], served, closed
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
    listener.close()
    thread.join(5)


@pytest.fixture
def hanging_up_server():
    for port, served, _ in serving(answer_second=False):
        yield port, served


@pytest.fixture
def idle_closing_server():
    yield from serving(answer_second=True)


def test_a_connection_closed_while_idle_is_not_reused_and_nothing_fails(idle_closing_server):
    port, served, closed = idle_closing_server
    client = Client(port, https=False, keep_alive=True)
    client.request("GET", "/")
    wait_for(lambda: closed, 5, "the server to close the idle connection")

    assert client.request("GET", "/").status == 200  # on a new connection, sent once
    assert len(served) == 2
    client.close()


def test_a_strict_client_never_resends_and_raises_the_closed_connection(hanging_up_server):
    port, served = hanging_up_server
    client = Client(port, https=False, keep_alive=True)
    client.request("GET", "/")

    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
        client.request("GET", "/")
    assert len(served) == 1
    client.close()


def test_a_resending_client_resends_a_repeatable_request_once_on_a_new_connection(hanging_up_server):
    port, served = hanging_up_server
    client = Client(port, https=False, keep_alive=True, resend=True)

    statuses = [client.request("GET", "/").status for _ in range(3)]
    keyed = client.request("POST", "/", {"title": "t"}, headers={"Idempotency-Key": "k"}).status

    assert statuses == [200, 200, 200] and keyed == 200
    assert len(served) == 4
    assert client.cookies == {"session": "abc"}
    client.close()


def test_a_write_without_a_key_is_not_resent(hanging_up_server):
    port, served = hanging_up_server
    client = Client(port, https=False, keep_alive=True, resend=True)
    client.request("GET", "/")

    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
        client.request("POST", "/", {"title": "t"})
    assert len(served) == 1
