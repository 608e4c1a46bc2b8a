"""The harness's waits (harness/wait.py): on a value, a log line, a server that must become
ready while its process runs; each fails naming what it waited for, never silently."""

import subprocess
import threading
import time

import pytest

from harness.wait import NotReady, log_size, wait_for, wait_for_line, wait_for_server


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


def test_a_server_that_exits_fails_its_wait_at_once_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", "-c", "echo line one; echo 'bad config: no port' >&2; exit 3"],
                                stdout=out, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        with pytest.raises(NotReady) as failure:
            wait_for_server(proc, lambda: False, 60, "the server listening", log)
    finally:
        proc.wait(5)
    assert time.monotonic() - started < 30  # the shell exits at once; the bound is 60
    assert str(failure.value).startswith("the server listening: exited with status 3 first")
    assert f"its log, {log}, ends:\nline one\nbad config: no port" in str(failure.value)


def test_a_server_that_never_gets_ready_fails_at_the_timeout_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {number}\n" for number in range(100)))
    proc = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(NotReady) as failure:
            wait_for_server(proc, lambda: False, 0.2, "the server listening", log)
        assert proc.poll() is None  # the wait stops waiting; stopping the server is the caller's
    finally:
        proc.kill()
        proc.wait(5)
    message = str(failure.value)
    assert message.startswith("the server listening not seen after 0.2 s")
    assert message.endswith("\n".join(f"line {number}" for number in range(70, 100)))
    assert "line 69\n" not in message  # the last 30 lines, not the whole log


def test_a_server_wait_returns_once_ready_and_names_a_missing_log(tmp_path):
    proc = subprocess.Popen(["sleep", "60"])
    answers = iter([False, False, True])
    try:
        wait_for_server(proc, lambda: next(answers), 5, "the server listening", tmp_path / "none.log", interval=0.01)
        with pytest.raises(NotReady, match=r"none\.log, cannot be read \(No such file or directory\)"):
            wait_for_server(proc, lambda: False, 0.1, "the server listening", tmp_path / "none.log")
    finally:
        proc.kill()
        proc.wait(5)
