"""Waiting on observable state (a port, a row, a log line), never on the clock alone."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
POLL_INTERVAL = 0.05


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = POLL_INTERVAL) -> T:
    """Poll `predicate` until it returns something truthy, and return that; raise TimeoutError
    naming `what` once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not seen after {timeout:g} s")
        time.sleep(interval)


def wait_for_line(path: Path, needle: str, timeout: float, start: int = 0) -> str:
    """The first line of a (growing) log file, from byte `start` on, that contains `needle`."""

    def find() -> str | None:
        try:
            with open(path, "rb") as log:
                log.seek(start)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return None
        return next((line for line in text.splitlines() if needle in line), None)

    return wait_for(find, timeout, f"{needle!r} in {path}")


def log_size(path: Path) -> int:
    """Where a log file ends now: pass it as `start` to wait only for lines written after this."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class NotReady(RuntimeError):
    """A server the harness started exited, or did not become ready in time; the message
    carries the last lines of its log."""


def wait_for_server(proc: subprocess.Popen, ready: Callable[[], object], timeout: float, what: str,
                    log: Path, interval: float = POLL_INTERVAL) -> None:
    """Wait until `ready()` holds while `proc` runs. A process that exits fails at once, not at
    the timeout. Either failure quotes the end of `log`, since a server's log usually goes with
    its directory before anyone reads the error."""

    def running_and_ready() -> object:
        if proc.poll() is not None:
            raise NotReady(f"{what}: exited with status {proc.returncode} first; {log_tail(log)}")
        return ready()

    try:
        wait_for(running_and_ready, timeout, what, interval)
    except TimeoutError as error:
        raise NotReady(f"{error}; {log_tail(log)}") from None


def log_tail(path: Path, lines: int = 30) -> str:
    """'its log, PATH, ends:' and the last lines of a log, for an error message."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as error:
        return f"its log, {path}, cannot be read ({error.strerror})"
    return f"its log, {path}, ends:\n" + "\n".join(tail)
