"""The fault proxy (harness/faults.py): pass through, delay, stall, cut and refuse, as the
drills use them."""

import select
import socket
import socketserver
import threading
import time

import pytest

from harness.faults import FaultProxy
from harness.process import free_port, port_open
from harness.wait import wait_for


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass  # the proxy reset us, as cut() and refuse() mean to


@pytest.fixture
def echo_port():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="echo-server")
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()  # joins the handler threads
    thread.join(5)


@pytest.fixture
def proxy(echo_port):
    with FaultProxy(echo_port) as proxy:
        yield proxy


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


def round_trip(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return receive(sock, len(data))


def assert_reset(sock: socket.socket):
    """The proxy closed the connection: the peer sees a reset, or at least EOF."""
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass


def test_passes_bytes_through_and_counts_connections(proxy):
    with connect(proxy.port) as sock:
        assert round_trip(sock, b"hello") == b"hello"
        assert round_trip(sock, b"x" * 200_000) == b"x" * 200_000
        assert proxy.connections_accepted == 1
        assert proxy.active_connections == 1
    wait_for(lambda: proxy.active_connections == 0, 5, "the closed connection to end")


def test_delay_adds_at_least_the_delay_to_a_round_trip_and_keeps_order(proxy):
    with connect(proxy.port) as sock:
        round_trip(sock)  # connected upstream before timing
        proxy.delay(0.2)
        started = time.monotonic()
        assert round_trip(sock) == b"ping"
        assert time.monotonic() - started >= 0.2

        for n in range(5):
            sock.sendall(b"%d," % n)
        assert receive(sock, 10) == b"0,1,2,3,4,"


def test_stall_accepts_and_holds_bytes_until_pass_through(proxy):
    with connect(proxy.port) as before:
        assert round_trip(before) == b"ping"
        proxy.stall()
        with connect(proxy.port) as during:
            wait_for(lambda: proxy.active_connections == 2, 5, "the connection made during the stall")
            before.sendall(b"one")
            during.sendall(b"two")
            readable, _, _ = select.select([before, during], [], [], 0.5)
            assert readable == []

            proxy.pass_through()
            assert receive(before, 3) == b"one"
            assert receive(during, 3) == b"two"


def test_cut_resets_current_connections_then_serves_new_ones(proxy):
    with connect(proxy.port) as old:
        assert round_trip(old) == b"ping"
        proxy.cut()
        assert proxy.active_connections == 0
        assert_reset(old)
    with connect(proxy.port) as new:
        assert round_trip(new) == b"ping"
    assert proxy.connections_accepted == 2


def test_refuse_closes_the_port_until_pass_through_listens_again(proxy):
    port = proxy.port
    with connect(port) as old:
        assert round_trip(old) == b"ping"
        proxy.refuse()
        assert_reset(old)
    with pytest.raises(ConnectionRefusedError):
        connect(port).close()

    proxy.pass_through()
    assert proxy.port == port
    with connect(port) as new:
        assert round_trip(new) == b"ping"


def test_a_refused_upstream_resets_the_client():
    with FaultProxy(free_port()) as proxy:
        try:
            with connect(proxy.port) as sock:
                assert_reset(sock)
        except ConnectionResetError:
            pass  # on a busy machine the reset can land before connect() returns (a CI run did)
        assert proxy.connections_accepted == 1  # reset by the proxy: a closed port would refuse
        wait_for(lambda: proxy.active_connections == 0, 5, "the failed connection to end")


def test_close_ends_the_thread_and_the_port(echo_port):
    before = set(threading.enumerate())
    proxy = FaultProxy(echo_port).start()
    started = set(threading.enumerate()) - before
    with connect(proxy.port) as sock:
        assert round_trip(sock) == b"ping"
        proxy.close()
        assert_reset(sock)
    proxy.close()

    assert started and not started & set(threading.enumerate())
    assert not port_open(proxy.port)
    with pytest.raises(RuntimeError):
        proxy.stall()
