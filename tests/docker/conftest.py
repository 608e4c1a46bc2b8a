"""Session fixtures for the container tests: a private dockerd, stand-in base images, a
wheelhouse, and the web image built once; or, with KIT_DOCKER=host (harness/docker.py), the
host's engine, the real pinned images, and the web image CI built (KIT_WEB_IMAGE). Everything
here is stopped or removed by the fixture that started it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness.compose import Stack
from harness.docker import (
    DockerEngine,
    build_standins,
    build_wheelhouse,
    cache_dir,
    engine_for_tests,
    on_host_engine,
    pinned_images,
)
from harness.releases import build_releases
from harness.servers import RegistryServer


@dataclass(frozen=True)
class WebImage:
    name: str
    git_sha: str
    build_env: dict[str, str]


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory) -> Iterator[DockerEngine]:
    # a short path: containerd's socket under --exec-root must fit in 107 bytes
    engine = engine_for_tests(tmp_path_factory.mktemp("dockerd"))
    engine.start()
    try:
        yield engine
    finally:
        # Each run builds a new web image; untagged old ones would pile up in the cached data root.
        if not on_host_engine():
            engine.docker("image", "prune", "--force", check=False, capture=True)
        engine.stop()


@pytest.fixture(scope="session")
def base_images(docker_engine) -> dict[str, str]:
    """Compose image variables: the local stand-ins (python, postgres, redis, nginx), or the
    real pinned images on the host's engine."""
    return pinned_images() if on_host_engine() else build_standins(docker_engine)


@pytest.fixture(scope="session")
def wheelhouse() -> str:
    """pip inside a build cannot verify PyPI's TLS here; a runner's can, and needs none."""
    return "" if on_host_engine() else build_wheelhouse()


@pytest.fixture(scope="session")
def web_image(docker_engine, base_images, wheelhouse) -> WebImage:
    """The web image, built once from this checkout the way CI builds it (layer cache: seconds),
    or the one CI built (KIT_WEB_IMAGE), run as it is."""
    built = os.environ.get("KIT_WEB_IMAGE") if on_host_engine() else None
    image = WebImage(built or "flask-kit-web:e2e", "e2e0123456789abcdef", {})
    build_env = {**docker_engine.env, **base_images, "WHEELHOUSE": wheelhouse, "WEB_IMAGE": image.name,
                 "GIT_SHA": image.git_sha}
    if built:
        revision = docker_engine.docker("image", "inspect", "--format",
                                        '{{index .Config.Labels "org.opencontainers.image.revision"}}', built,
                                        capture=True).stdout.decode().strip()
        return WebImage(built, revision, {**build_env, "GIT_SHA": revision})
    Stack(docker_engine, f"fk-build-{os.getpid()}", build_env, 0, 0).compose("build", "web")
    return WebImage(image.name, image.git_sha, build_env)


@pytest.fixture(scope="session")
def release_registry(docker_engine, base_images, web_image, tmp_path_factory) -> Iterator[str]:
    """A loopback registry holding releases A to E (harness/releases.py), built once for the
    Compose and the Swarm tests. Its blobs are kept between runs beside the engine's data root
    (one suite at a time uses either): a push then sends only the layers that changed, not
    ~700 MB of base layers."""
    registry = RegistryServer(tmp_path_factory.mktemp("registry"), storage=cache_dir() / "registry")
    registry.start()
    try:
        build_releases(docker_engine, base_images, web_image.build_env, registry.address)
        yield registry.address
    finally:
        images = docker_engine.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                                      "--filter", f"reference={registry.address}/*", capture=True).stdout.split()
        if images:
            docker_engine.docker("image", "rm", "--force", *map(bytes.decode, images), check=False, capture=True)
        registry.stop()
