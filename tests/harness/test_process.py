"""The harness's processes and ports (harness/process.py): stopping by PID, freezing a tree,
finding binaries, and free ports that no two servers of a run share."""

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
    port_slice,
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
    # bind(0), used before, offered about 14,000 ports at random: 1000 draws repeated some 35 times
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


def test_each_process_draws_from_a_slice_of_its_own_below_the_ephemeral_ports():
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    slices = [port_slice(f"gw{number}", pid=1) for number in range(4)]
    slices += [port_slice(None, pid) for pid in range(100, 104)]
    for index, ports in enumerate(slices):
        assert 10000 <= ports.start and ports.stop <= ephemeral and len(ports) > 2000
        assert all(set(ports).isdisjoint(other) for other in slices[index + 1:])
    assert port_slice("gw1", pid=7) == port_slice("gw1", pid=8)  # a worker's slice is its number's


DRAW = "from harness.process import free_port; print(*[free_port() for _ in range(300)])"


def test_two_workers_of_one_run_never_hand_out_the_same_port():
    drawn = []
    for worker in ("gw0", "gw1"):
        result = subprocess.run([sys.executable, "-c", DRAW], env={**os.environ, "PYTEST_XDIST_WORKER": worker},
                                cwd=Path(__file__).parents[2], capture_output=True, text=True, check=True, timeout=60)
        drawn.append({int(port) for port in result.stdout.split()})
    assert len(drawn[0]) == len(drawn[1]) == 300
    assert drawn[0].isdisjoint(drawn[1])
    assert drawn[0] <= set(port_slice("gw0", 0)) and drawn[1] <= set(port_slice("gw1", 0))


def test_free_port_passes_over_a_port_something_else_holds():
    ours = port_slice(os.environ.get("PYTEST_XDIST_WORKER"), os.getpid())
    port = free_port()
    following = ours.start + (port + 1 - ours.start) % len(ours)
    with socket.create_server(("127.0.0.1", following)):  # taken by another program, say
        assert free_port() != following


def test_find_binary_names_what_is_missing():
    assert Path(find_binary("sh")).name == "sh"
    with pytest.raises(RuntimeError, match="no-such-server is not installed"):
        find_binary("no-such-server")
