"""Child processes and ports: find a binary, pick a free port, stop a process by its PID."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

from .wait import wait_for

# Every port free_port has handed out in this process, under its lock.
_handed_out: set[int] = set()
_handing_out = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to now, and never one this process handed out before. The kernel
    picks bind(0)'s port at random among the free ones, and a port just released is free: two
    servers of one run were given the same port, and the one started second failed with
    "Connection in use" (seen in `make bench`, which starts about 45 sites of five ports each)."""
    with _handing_out:
        for _ in range(1000):
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError(f"every free port on {host} was handed out already: run fewer servers in one process")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def find_binary(name: str) -> str:
    """A server binary on PATH, in /usr/sbin, or in Debian's versioned PostgreSQL directory."""
    found = (shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
             or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None))
    if not found:
        raise RuntimeError(f"{name} is not installed: run scripts/install-servers.sh (make test does)")
    return found


def child_pids(parent: int) -> list[int]:
    """Direct children of one process, from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def process_state(pid: int) -> tuple[str, str]:
    """A process's command name and state letter (R, S, T for stopped, Z...), from /proc; ("", "X")
    once it is gone."""
    try:
        comm, rest = Path(f"/proc/{pid}/stat").read_text().split(" (", 1)[1].rsplit(")", 1)
    except (OSError, IndexError, ValueError):
        return "", "X"
    return comm, rest.split()[0]


def stop_tree(pid: int) -> None:
    """SIGSTOP one process and its direct children, and return once each is stopped: a signal
    lands asynchronously, and a process that has not stopped yet still answers."""
    signal_tree(pid, signal.SIGSTOP)
    targets = [pid, *child_pids(pid)]
    wait_for(lambda: all(process_state(target)[1] in "TX" for target in targets), 5, f"process {pid} stopped")


def signal_tree(pid: int, sig: int) -> None:
    """Signal one process and its direct children (a server's master and its workers)."""
    for target in [pid, *child_pids(pid)]:
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            pass


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    """Stop one child by its PID: the given signal first, SIGKILL if it outlives the timeout.
    A stopped (SIGSTOP) process is continued first, or it could not act on the signal."""
    if proc.poll() is None:
        proc.send_signal(sig)
        os.kill(proc.pid, signal.SIGCONT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
