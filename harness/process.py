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

# Ports for test servers lie below the kernel's ephemeral range, so no outgoing connection ever
# holds one. The range is cut into slices, and each process draws from its own: a pytest-xdist
# worker (gw0 to gw3) from the slice of its number, any other process (the bench, a lone pytest)
# from one of the rest by its PID. Two processes of one run then never hand out the same port. (A
# program a worker runs, such as the bench's end-to-end test, inherits its slice and walks it
# from another place, while the worker waits on it.)
_LOWEST_PORT = 10000
_SLICES = 8
_XDIST_SLICES = 4

# Where this process's walk through its slice goes on from (None: from a place its PID picks).
_next_port: int | None = None
_handing_out = threading.Lock()


def port_slice(worker: str | None, pid: int) -> range:
    """The ports one process draws from: `worker` is its PYTEST_XDIST_WORKER (gw0, gw1...), if any."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768  # Linux's default
    size = (ephemeral - _LOWEST_PORT) // _SLICES
    if worker:
        number = int(worker.removeprefix("gw")) % _XDIST_SLICES
    else:
        number = _XDIST_SLICES + pid % (_SLICES - _XDIST_SLICES)
    start = _LOWEST_PORT + number * size
    return range(start, start + size)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to now, from this process's slice (above). The walk goes round the
    slice before it repeats a port: bind(0), used before, picks at random among the free ports,
    and offered a just-released one again, so two servers of one bench site were given the same
    port and the one started second failed with "Connection in use"."""
    global _next_port
    ports = port_slice(os.environ.get("PYTEST_XDIST_WORKER"), os.getpid())
    with _handing_out:
        position = ports.start + os.getpid() % len(ports) if _next_port is None else _next_port
        for step in range(len(ports)):
            port = ports.start + (position - ports.start + step) % len(ports)
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue  # taken by anything else on the machine, or in TIME_WAIT
            _next_port = port + 1
            return port
    raise RuntimeError(f"no free port on {host} in {ports.start}-{ports.stop - 1}: stop what holds them")


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
