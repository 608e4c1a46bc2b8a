"""Session fixtures for the container tests: a private dockerd, stand-in base images, a
wheelhouse. Everything here is stopped or removed by the fixture that started it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.docker.engine import DockerEngine, build_standins, build_wheelhouse


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory) -> Iterator[DockerEngine]:
    # a short path: containerd's socket under --exec-root must fit in 107 bytes
    engine = DockerEngine(workdir=tmp_path_factory.mktemp("dockerd"))
    engine.start()
    try:
        yield engine
    finally:
        # Each run builds a new web image; untagged old ones would pile up in the cached data root.
        engine.docker("image", "prune", "--force", check=False, capture=True)
        engine.stop()


@pytest.fixture(scope="session")
def base_images(docker_engine) -> dict[str, str]:
    """Compose image variables pointing at the local stand-ins (python, postgres, redis, nginx)."""
    return build_standins(docker_engine)


@pytest.fixture(scope="session")
def wheelhouse() -> str:
    return build_wheelhouse()
