"""Limits on failed logins, per account and per client address, counted in Redis.

Each failed login counts against the account (guessing one password from many addresses)
and against the client address (trying many accounts from one place), in fixed windows of
LOGIN_FAILURE_WINDOW_SECONDS. Past either limit, login answers 429 with Retry-After, the right
password included, and without hashing anything: a refused attempt costs one Redis round trip,
not 70 ms of CPU. A successful login clears its account's count.

Counting failures, not attempts, means users who type their password right are never limited.
The price: an attacker can hold one account at its limit. The per-address limit bounds how
many accounts one address can do that to.
"""

from __future__ import annotations

import hashlib
import time

from flask import Flask, current_app
from redis import Redis

KEY_PREFIX = "login-failures:"


class LoginLimits:
    def __init__(self, client: Redis | None, per_account: int, per_address: int, window: int):
        self.counters = RedisCounters(client) if client is not None else MemoryCounters()
        self.per_account = per_account
        self.per_address = per_address
        self.window = window

    def retry_after(self, email: str, address: str) -> int:
        """Seconds until this email may try again from this address; 0 if it may now."""
        keys = {self._account(email): self.per_account, self._address(address): self.per_address}
        waits = [ttl for (count, ttl), limit in zip(self.counters.read(list(keys)), keys.values(), strict=True)
                 if count >= limit]
        return max(waits, default=0)

    def failed(self, email: str, address: str) -> None:
        self.counters.increment([self._account(email), self._address(address)], self.window)

    def succeeded(self, email: str) -> None:
        self.counters.clear(self._account(email))

    @staticmethod
    def _account(email: str) -> str:
        # a digest, so the keys hold no email address
        return KEY_PREFIX + "account:" + hashlib.sha256(email.encode()).hexdigest()[:32]

    @staticmethod
    def _address(address: str) -> str:
        return KEY_PREFIX + "address:" + address


class RedisCounters:
    """Fixed-window counters: each read or update is one round trip (a pipeline)."""

    def __init__(self, client: Redis):
        self.client = client

    def read(self, keys: list[str]) -> list[tuple[int, int]]:
        """(count, seconds left in its window) per key."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.ttl(key)
        replies = pipe.execute()
        return [(int(count or 0), max(ttl, 1)) for count, ttl in zip(replies[::2], replies[1::2], strict=True)]

    def increment(self, keys: list[str], window: int) -> None:
        # MULTI/EXEC: a count can never be left without its expiry (a lockout without end)
        pipe = self.client.pipeline(transaction=True)
        for key in keys:
            pipe.incr(key)
            # NX: the window starts at the first failure and is not extended by later ones
            pipe.expire(key, window, nx=True)
        pipe.execute()

    def clear(self, key: str) -> None:
        self.client.delete(key)


class MemoryCounters:
    """The embedded mode's stand-in (no Redis): per process, so each worker counts alone."""

    def __init__(self):
        self.counts: dict[str, tuple[int, float]] = {}

    def read(self, keys: list[str]) -> list[tuple[int, int]]:
        now = time.monotonic()
        entries = [self.counts.get(key, (0, now)) for key in keys]
        return [(count, max(int(ends - now), 1)) if ends > now else (0, 0) for count, ends in entries]

    def increment(self, keys: list[str], window: int) -> None:
        now = time.monotonic()
        for key in keys:
            count, ends = self.counts.get(key, (0, 0.0))
            self.counts[key] = (count + 1, ends) if ends > now else (1, now + window)

    def clear(self, key: str) -> None:
        self.counts.pop(key, None)


def login_limits() -> LoginLimits:
    return current_app.extensions["login_limits"]


def init_app(app: Flask) -> None:
    app.extensions["login_limits"] = LoginLimits(
        app.extensions["redis"], app.config["LOGIN_FAILURES_PER_ACCOUNT"], app.config["LOGIN_FAILURES_PER_ADDRESS"],
        app.config["LOGIN_FAILURE_WINDOW_SECONDS"])
