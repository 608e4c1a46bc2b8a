"""Child processes and ports: find a binary, pick a free port, stop a process by its PID."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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
