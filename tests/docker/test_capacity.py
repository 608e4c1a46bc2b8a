"""Web's worker count, read inside containers on this host: a CPU quota (Compose's `cpus:`)
limits it, not the host's core count."""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The workers gunicorn.conf.py would start, evaluated in the image as Gunicorn evaluates it.
WORKERS = "import runpy; print(runpy.run_path('gunicorn.conf.py')['workers'])"


def workers(docker_engine, web_image, *limits: str) -> int:
    result = docker_engine.docker("run", "--rm", *limits, "--entrypoint", "python", web_image.name, "-c", WORKERS,
                                  capture=True)
    return int(result.stdout.decode().strip().splitlines()[-1])


def test_a_one_cpu_container_runs_one_worker_on_a_bigger_host(docker_engine, web_image):
    host_cpus = len(os.sched_getaffinity(0))
    assert host_cpus > 1, "this check needs a host with more than one CPU"

    assert workers(docker_engine, web_image) == host_cpus  # no limit: every core
    assert workers(docker_engine, web_image, "--cpus", "1") == 1
    assert workers(docker_engine, web_image, "--cpus", "1.5") == 2  # a fraction keeps a second busy part-time
    assert workers(docker_engine, web_image, "--cpus", "1", "--env", "WEB_CONCURRENCY=3") == 3  # explicit wins
