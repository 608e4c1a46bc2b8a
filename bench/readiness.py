"""Measure what load balancer polling of /health/ready costs the database.

Starts real PostgreSQL (logging every statement), Redis and Gunicorn with gunicorn.conf.py,
polls /health/ready from several client threads for a bounded time, then counts the
readiness rounds PostgreSQL actually received (each reads alembic_version once) and the
statements they cost, apart from each new connection's one-time set-up.

Usage: .venv/bin/python -m bench.readiness [--seconds 5] [--clients 8] [--workers 2] [--ttl 1]
"""

from __future__ import annotations

import argparse
import http.client
import threading
import time

from harness.servers import GunicornServer, PostgresServer, RedisServer, migrate_to_head


def poll(port: int, until: float, counts: list[int]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    done = 0
    while time.monotonic() < until:
        connection.request("GET", "/health/ready")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"readiness answered {response.status}")
        done += 1
    connection.close()
    counts.append(done)


ROUND = "SELECT version_num FROM alembic_version"


def statement_counts(log: str) -> tuple[int, int]:
    """(readiness rounds, statements once connected). The log line prefix is the session id:
    a session's statements before its first round are the connection's set-up."""
    rounds, statements, connected = 0, 0, set()
    for line in log.splitlines():
        session, _, statement = line.partition(" statement: ")
        if not statement:
            continue
        if statement == ROUND:
            rounds += 1
            connected.add(session)
        statements += session in connected
    return rounds, statements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ttl", type=float, default=1.0)
    options = parser.parse_args()

    postgres = PostgresServer({"log_statement": "all", "log_line_prefix": "%c "})
    redis = RedisServer(postgres.workdir / "redis")
    gunicorn = None
    try:
        postgres.start()
        redis.start()
        url = postgres.create_database("bench")
        migrate_to_head(url)
        gunicorn = GunicornServer({"APP_ENV": "testing", "DATABASE_URL": url, "REDIS_URL": redis.url,
                                   "WEB_CONCURRENCY": str(options.workers), "HEALTH_CACHE_TTL": str(options.ttl),
                                   "LOG_LEVEL": "warning"})
        gunicorn.start()
        log_start = postgres.log.stat().st_size

        counts: list[int] = []
        started = time.monotonic()
        threads = [threading.Thread(target=poll, args=(gunicorn.port, started + options.seconds, counts))
                   for _ in range(options.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(options.seconds + 30)
        elapsed = time.monotonic() - started

        with open(postgres.log) as log:
            log.seek(log_start)
            rounds, statements = statement_counts(log.read())
        requests = sum(counts)
        ceiling = options.workers * (elapsed / options.ttl + 1)
        print(f"polls: {requests} in {elapsed:.1f} s ({requests / elapsed:.0f} req/s) "
              f"from {options.clients} clients, {options.workers} workers, TTL {options.ttl:g} s")
        print(f"readiness rounds reaching Postgres: {rounds} "
              f"(at most one per worker per TTL: {ceiling:.0f}); {statements} statements once connected "
              f"({statements / rounds:.1f} per round)")
    finally:
        if gunicorn:
            gunicorn.close()
        redis.stop()
        postgres.close()


if __name__ == "__main__":
    main()
