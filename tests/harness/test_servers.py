"""The harness's Gunicorn: a master that exits before it answers fails start() at once, not at
the timeout, and the error keeps what its log said, which close() deletes."""

import time

import pytest

from harness.servers import GunicornServer
from harness.wait import NotReady


def test_a_gunicorn_that_exits_fails_its_start_at_once_and_names_why():
    server = GunicornServer({"APP_ENV": "production", "SECRET_KEY": "too-short",
                             "DATABASE_URL": "postgresql://kit@127.0.0.1:9/kit", "REDIS_URL": "redis://127.0.0.1:9/0"})
    began = time.monotonic()
    try:
        with pytest.raises(NotReady) as failure:
            server.start(timeout=120)
    finally:
        server.close()

    assert time.monotonic() - began < 60  # the master exits within seconds; the bound is 120
    assert "gunicorn answering /health: exited with status 4 first" in str(failure.value)
    assert "configuration error: SECRET_KEY is too short" in str(failure.value)
