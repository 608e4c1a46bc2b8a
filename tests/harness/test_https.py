"""harness.https.Client against a plain-HTTP server that hangs up on idle keep-alive
connections after each answer, as nginx does when its keepalive_timeout ends."""

import http.client
import socket
import threading

import pytest

from harness.https import Client

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: session=abc; Path=/\r\n\r\nok"


@pytest.fixture
def hanging_up_server():
    """Answers one request per connection, then closes it without saying so."""
    listener = socket.create_server(("127.0.0.1", 0))
    served = []

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

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], served
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
    listener.close()
    thread.join(5)


def test_a_repeatable_request_is_resent_once_on_a_new_connection(hanging_up_server):
    port, served = hanging_up_server
    client = Client(port, https=False, keep_alive=True)

    statuses = [client.request("GET", "/").status for _ in range(3)]
    keyed = client.request("POST", "/", {"title": "t"}, headers={"Idempotency-Key": "k"}).status

    assert statuses == [200, 200, 200] and keyed == 200
    assert len(served) == 4
    assert client.cookies == {"session": "abc"}
    client.close()


def test_a_write_without_a_key_is_not_resent(hanging_up_server):
    port, served = hanging_up_server
    client = Client(port, https=False, keep_alive=True)
    client.request("GET", "/")

    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
        client.request("POST", "/", {"title": "t"})
    assert len(served) == 1
