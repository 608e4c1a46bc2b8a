"""The Gunicorn worker class (gunicorn.conf.py's default): gevent's, whose listener takes every
connection the kernel has queued for it before it closes.

A stopping gevent worker stops its accept loop and closes the listening socket. Connections the
kernel completed in between (handshake done, not yet accepted) are reset by the close, and nginx
had already sent a request on each: it passes a GET on to another replica, but not a POST, whose
client then gets a 502. During a release nginx keeps opening connections to a draining replica
until it leaves DNS, so under load some land in that gap, which is as long as the event loop's
turn between the last accept and the close (milliseconds on a busy worker). Measured with twelve
clients opening connection after connection against one worker told to stop: 4 to 12 resets
each time with gevent's close, none with this one
(`test_a_stopping_gunicorn_answers_or_refuses_every_new_connection`).

Here the listener's close first accepts, without yielding to the event loop, whatever is queued,
and hands each connection to the worker like any other; the gap left is the few microseconds
between the last empty accept and the close. A connection nginx opens after it is refused, and
nginx sends its request to another replica, nothing sent, which is safe for any method.

Two details of gevent and Gunicorn make that close the one that runs, and keep its handlers
working:
- gevent's StreamServer unwraps its listener to the innermost socket object and closes that
  (`StreamServer._make_socket_stdlib` follows `_sock`); the wrapper hides `_sock`, so the server
  keeps it, and closes it through it.
- Its name outlives the close. Gunicorn's handler first asks the listener it was given for its
  name (`AsyncWorker.handle`: `listener.getsockname()`), and a handler starts on the loop's next
  turn: for one spawned just before the close (the accept loop's last connections, and every one
  drained here) that is after it. On a closed listener the call raises, the handler closes the
  connection with the request unread, and the kernel resets it. So the name is read once.
"""

from __future__ import annotations

import gevent
from gunicorn.workers.ggevent import GeventWorker


class DrainingListener:
    """A listening socket (Gunicorn's, which proxies a gevent socket) whose close() first takes
    every queued connection and hands it to `handle(listener, client, address)`, this listener
    being the one handed."""

    def __init__(self, listener, handle):
        self._listener = listener
        self._handle = handle
        self._name = listener.getsockname()
        self.drained: list[gevent.Greenlet] = []

    def __getattr__(self, name):
        if name == "_sock":
            # gevent's StreamServer unwraps its listener to the innermost `_sock` and then
            # accepts on and closes that (StreamServer._make_socket_stdlib): this close would
            # never run. Without `_sock` the server keeps this wrapper.
            raise AttributeError(name)
        return getattr(self._listener, name)

    def getsockname(self):
        """The address it listens on, also once it is closed."""
        return self._name

    def close(self) -> None:
        self._listener.setblocking(False)
        while True:
            try:
                client, address = self._listener.accept()
            except BlockingIOError:
                break  # nothing queued
            except OSError:
                break  # already closed
            self.drained.append(gevent.spawn(self._handle, self, client, address))
        self._listener.close()


class DrainingGeventWorker(GeventWorker):
    """gevent's worker, whose stop leaves no accepted connection unanswered."""

    def run(self):
        listeners = [DrainingListener(listener, self.handle) for listener in self.sockets]
        self.sockets = listeners
        super().run()  # returns once its own connections are done, or at graceful_timeout
        drained = [greenlet for listener in listeners for greenlet in listener.drained]
        if drained:
            self.log.info("Worker drained (pid:%s): %d connection(s) were queued at the close",
                          self.pid, len(drained))
            gevent.joinall(drained, timeout=self.cfg.graceful_timeout)
