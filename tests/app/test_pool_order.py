"""The pool's queue (app/datastores.py FairQueue) hands connections out in the order they were
asked for: no late request takes a returned connection ahead of those already waiting, and a
waiter that gave up at its timeout leaves the line and never receives one. Threads stand in for
the workers' greenlets: the suite is not patched by gevent, and the queue waits on
`threading`'s primitives, which are gevent's in a worker."""

import threading

import pytest
from sqlalchemy.util import queue as sqla_queue

from app.datastores import FairQueue
from harness.wait import wait_for


def test_a_returned_connection_goes_to_the_longest_waiter_not_to_a_newcomer():
    queue = FairQueue(1)
    queue.put("connection", False)
    held = queue.get(True, 1)
    served: list[str] = []

    def ask(name: str) -> None:
        connection = queue.get(True, 5)
        served.append(name)
        queue.put(connection, False)

    def start(name: str) -> threading.Thread:
        thread = threading.Thread(target=ask, args=(name,))
        thread.start()
        return thread

    waiters = []
    for n in range(3):  # one at a time, so that their order is known
        waiters.append(start(f"waiter {n}"))
        wait_for(lambda queued=n + 1: len(queue.waiters) == queued, 5, f"waiter {n} queued")
    with queue.mutex:  # the connection comes back and a newcomer asks before any waiter runs
        queue.put(held, False)
        newcomer = start("newcomer")
        # SQLAlchemy's own queue would hand the newcomer the connection at once
    for thread in (*waiters, newcomer):
        thread.join(5)
        assert not thread.is_alive()

    assert served == ["waiter 0", "waiter 1", "waiter 2", "newcomer"]
    assert queue.qsize() == 1 and not queue.waiters


def test_a_waiter_that_timed_out_leaves_the_line_and_nothing_is_lost():
    queue = FairQueue(1)
    queue.put("connection", False)
    held = queue.get(False)

    with pytest.raises(sqla_queue.Empty):
        queue.get(True, 0.05)
    assert not queue.waiters
    with pytest.raises(sqla_queue.Empty):
        queue.get(False)  # never a free one while the queue is empty

    queue.put(held, False)
    assert queue.qsize() == 1, "the connection went back to the queue, not to the waiter that left"
    assert queue.get(False) == "connection"
