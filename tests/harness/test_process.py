import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.process import (
    child_pids,
    find_binary,
    free_port,
    port_open,
    process_state,
    signal_tree,
    stop_process,
    stop_tree,
)
from harness.wait import wait_for


def python(code: str) -> subprocess.Popen:
    """A Python child that prints one line once it is ready; the caller waits for that line."""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def state(pid: int) -> str | None:
    """The process state letter (R, S, T stopped, Z zombie), or None once it is gone."""
    letter = process_state(pid)[1]
    return None if letter == "X" else letter


# A process with one child, that prints the child's pid, then both idle.
PARENT_OF_ONE = ("import subprocess, sys, time; "
                 "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                 "print(child.pid, flush=True); time.sleep(60)")


def test_stop_process_escalates_to_sigkill_when_sigterm_is_ignored():
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
           "time.sleep(60)"
    with python(code) as proc:
        assert proc.stdout.readline() == "ready\n"
        assert stop_process(proc, timeout=0.5) == -signal.SIGKILL


def test_stop_process_stops_a_stopped_process():
    with python("import time; print('ready', flush=True); time.sleep(60)") as proc:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: state(proc.pid) == "T", 5, "the child stopped")
        assert stop_process(proc, timeout=5) == -signal.SIGTERM


def test_stop_tree_returns_once_the_process_and_its_children_are_stopped():
    with python(PARENT_OF_ONE) as proc:
        child = int(proc.stdout.readline())
        try:
            stop_tree(proc.pid)
            assert (state(proc.pid), state(child)) == ("T", "T")  # no wait here: stop_tree did it
        finally:
            signal_tree(proc.pid, signal.SIGCONT)
            signal_tree(proc.pid, signal.SIGKILL)
            stop_process(proc)


def test_signal_tree_reaches_the_children():
    with python(PARENT_OF_ONE) as proc:
        child = int(proc.stdout.readline())
        try:
            assert child_pids(proc.pid) == [child]
            signal_tree(proc.pid, signal.SIGTERM)
            assert proc.wait(5) == -signal.SIGTERM
            wait_for(lambda: state(child) in (None, "Z"), 5, "the child ended")
        finally:
            if state(child) not in (None, "Z"):
                os.kill(child, signal.SIGKILL)
            stop_process(proc)


def test_free_port_is_closed_until_something_listens():
    port = free_port()
    assert not port_open(port)
    with socket.create_server(("127.0.0.1", port)):
        assert port_open(port)


def test_free_port_never_hands_out_a_port_twice():
    # bind(0) offers about 14,000 ports here, at random: 1000 draws would repeat some 35 times
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


def test_find_binary_names_what_is_missing():
    assert Path(find_binary("sh")).name == "sh"
    with pytest.raises(RuntimeError, match="no-such-server is not installed"):
        find_binary("no-such-server")
