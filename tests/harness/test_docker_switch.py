"""The one switch between this machine's private engine with stand-ins and a runner's own
engine with the real images (KIT_DOCKER, harness/docker.py)."""

from __future__ import annotations

import re

import pytest

from harness import REPO
from harness.docker import DockerEngine, HostEngine, engine_description, engine_for_tests, pinned_images


def test_without_the_switch_the_suite_starts_its_own_engine(monkeypatch, tmp_path):
    monkeypatch.delenv("KIT_DOCKER", raising=False)
    assert type(engine_for_tests(tmp_path)) is DockerEngine
    assert "private dockerd" in engine_description()


def test_with_the_switch_it_uses_the_hosts_engine_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("KIT_DOCKER", "host")
    monkeypatch.setenv("KIT_WEB_IMAGE", "ghcr.io/acme/flask-kit-web:sha-" + "a" * 40)
    engine = engine_for_tests(tmp_path)
    assert isinstance(engine, HostEngine)
    assert "the host's engine" in engine_description() and "sha-" + "a" * 40 in engine_description()
    # nothing answers there: the test run stops at once, naming the switch
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no.sock'}")
    with pytest.raises(RuntimeError, match="KIT_DOCKER=host, but no Docker engine answers"):
        engine.start(timeout=10)


def test_the_real_images_are_the_ones_the_dockerfiles_and_compose_pin():
    images = pinned_images()
    assert f"ARG BASE_IMAGE={images['BASE_IMAGE']}" in (REPO / "Dockerfile").read_text()
    assert f"ARG NGINX_IMAGE={images['NGINX_IMAGE']}" in (REPO / "nginx" / "Dockerfile").read_text()
    assert f"ARG POSTGRES_IMAGE={images['POSTGRES_IMAGE']}" in (REPO / "backup" / "Dockerfile").read_text()
    assert f"${{REDIS_IMAGE:-{images['REDIS_IMAGE']}}}" in (REPO / "docker-compose.yml").read_text()
    assert all(re.fullmatch(r"[a-z0-9./-]+:[0-9][\w.-]*", image) for image in images.values()), images
