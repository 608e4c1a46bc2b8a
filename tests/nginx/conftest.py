"""Fixtures for the nginx tests; the nginx tree itself is built by harness.nginx."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.nginx import world_readable_dir


@pytest.fixture
def nginx_prefix() -> Iterator[Path]:
    prefix = world_readable_dir()
    yield prefix
    shutil.rmtree(prefix, ignore_errors=True)
