"""A TCP fault proxy in front of a loopback server (Postgres, Redis): toxiproxy's ideas,
for a kernel without netem. Its asyncio loop runs in a thread of its own, so a test or a
drill switches modes from its own thread while the app keeps its connections through it.
Each switch has taken effect when the call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading

CHUNK = 65536
# Chunks held per direction. Beyond this the proxy stops reading, and TCP's window closes.
BUFFERED_CHUNKS = 64
# How long a caller waits for the proxy's loop to start, switch modes or stop.
STEP_TIMEOUT = 10


class FaultProxy:
    """Listens on 127.0.0.1:`port` and forwards each connection to the upstream server."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0  # chosen at start(), then kept, so that clients can reconnect after refuse()
        self.mode = "pass"
        self.connections_accepted = 0
        self._half_delay = 0.0  # each chunk waits this long, in each direction
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None  # clear while stalled
        self._stopping: asyncio.Event | None = None
        self._connections: dict[asyncio.Task, list[asyncio.StreamWriter]] = {}

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("the fault proxy is already running")
        self._flowing, self._stopping, running = asyncio.Event(), asyncio.Event(), threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(running),),
                                        name=f"fault-proxy-{self.upstream[1]}", daemon=True)
        self._thread.start()
        running.wait(STEP_TIMEOUT)
        try:
            self._run(self._switch(self.mode))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Reset every connection, stop listening and end the thread. Safe to call twice."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(STEP_TIMEOUT)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def pass_through(self) -> None:
        """Forward bytes as they come (the default); listen again after refuse()."""
        self._run(self._switch("pass"))

    def delay(self, seconds: float) -> None:
        """Add `seconds` to every round trip: each chunk is held back half of it, each way, in order."""
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        self._run(self._switch("delay", seconds / 2))

    def stall(self) -> None:
        """The black hole: accept and keep connections but move no byte until the mode changes.
        What arrives meanwhile is buffered and then delivered, as a frozen peer's kernel acks it."""
        self._run(self._switch("stall"))

    def cut(self) -> None:
        """Reset every current connection (RST, not FIN), as a crashed server or a dropped NAT
        entry would; new connections are then passed through."""
        self._run(self._switch("pass", reset=True))

    def refuse(self) -> None:
        """Close the listening socket, so that connecting fails fast, and reset every connection.
        Any other mode listens again on the same port."""
        self._run(self._refuse())

    def _run(self, step) -> None:
        """Run one mode change on the proxy's loop and wait for it, so it holds when we return."""
        if self._thread is None:
            step.close()
            raise RuntimeError("the fault proxy is not running")
        asyncio.run_coroutine_threadsafe(step, self._loop).result(STEP_TIMEOUT)

    async def _main(self, running: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        running.set()
        await self._stopping.wait()
        await self._refuse()

    async def _switch(self, mode: str, half_delay: float = 0.0, reset: bool = False) -> None:
        if reset:
            await self._reset_all()
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        self.mode, self._half_delay = mode, half_delay
        if mode == "stall":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.mode = "refuse"
        await self._reset_all()

    async def _reset_all(self) -> None:
        for task, writers in self._connections.items():
            for writer in writers:
                _reset(writer)
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """One client: connect upstream, then move bytes both ways until both sides have sent
        EOF. A failure on either side resets both, as a real peer's reset would."""
        self.connections_accepted += 1
        writers = [client_writer]
        self._connections[asyncio.current_task()] = writers
        pipes: list[asyncio.Task] = []
        try:
            if self._server is None:  # accepted just before refuse() closed the socket
                raise ConnectionRefusedError
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            writers.append(upstream_writer)
            pipes = [asyncio.create_task(half) for half in (*self._pipe(client_reader, upstream_writer),
                                                            *self._pipe(upstream_reader, client_writer))]
            done, _ = await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
            if any(task.exception() for task in done):
                raise ConnectionResetError
        except OSError:
            for writer in writers:
                _reset(writer)
        except asyncio.CancelledError:
            pass  # cut() or close() reset the connection; this task only ends
        finally:
            # no await here: a second cut() must not interrupt the cleanup
            for task in pipes:
                task.cancel()
            for writer in writers:
                writer.close()
            del self._connections[asyncio.current_task()]

    def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        """One direction, as two halves: receiving never waits for sending, so a delay holds
        each chunk back without slowing the stream, and a stall buffers what keeps arriving."""
        chunks: asyncio.Queue = asyncio.Queue(BUFFERED_CHUNKS)

        async def receive() -> None:
            while True:
                data = await reader.read(CHUNK)
                await chunks.put((self._loop.time() + self._half_delay, data))
                if not data:
                    return

        async def send() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(due - self._loop.time())
                await self._flowing.wait()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        return receive(), send()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so that the peer gets a RST rather than an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
