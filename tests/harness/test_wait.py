import threading
import time

import pytest

from harness.wait import log_size, wait_for, wait_for_line


def test_wait_for_returns_the_first_truthy_value():
    answers = iter([None, 0, "", "ready"])

    assert wait_for(lambda: next(answers), 5, "the answer", interval=0.01) == "ready"


def test_wait_for_names_what_it_waited_for_after_the_timeout():
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="the impossible not seen after 0.2 s"):
        wait_for(lambda: False, 0.2, "the impossible")
    assert time.monotonic() - started >= 0.2


def test_wait_for_line_sees_a_line_another_thread_appends(tmp_path):
    log = tmp_path / "server.log"  # does not exist yet

    def write():
        with open(log, "a") as out:
            out.write("starting\nlistening on 127.0.0.1:5432\n")

    writer = threading.Timer(0.1, write)
    writer.start()
    try:
        assert wait_for_line(log, "listening", 5) == "listening on 127.0.0.1:5432"
    finally:
        writer.join(5)


def test_a_start_offset_skips_the_lines_already_there(tmp_path):
    log = tmp_path / "server.log"
    assert log_size(log) == 0
    log.write_text("ready (before the restart)\n")
    start = log_size(log)

    with pytest.raises(TimeoutError):
        wait_for_line(log, "ready", 0.2, start)
    with open(log, "a") as out:
        out.write("ready (after the restart)\n")
    assert wait_for_line(log, "ready", 5, start) == "ready (after the restart)"
