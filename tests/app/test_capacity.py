"""Worker sizing from the container's CPU quota, and the connection budget's arithmetic."""

import os

import pytest

from app.capacity import ConnectionBudget, available_cpus, cpu_quota


@pytest.mark.parametrize("cpu_max, quota", [
    ("max 100000\n", None),          # no limit
    ("100000 100000\n", 1.0),        # cpus: 1.0
    ("150000 100000\n", 1.5),        # cpus: 1.5
    ("50000 100000\n", 0.5),
    ("garbage\n", None),
])
def test_the_quota_is_read_from_cpu_max(tmp_path, cpu_max, quota):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)

    assert cpu_quota(path) == quota


def test_no_cgroup_file_means_no_quota(tmp_path):
    assert cpu_quota(tmp_path / "absent") is None


@pytest.mark.parametrize("cpu_max, expected", [
    ("100000 100000", 1),   # one CPU's worth on a bigger host: 1 worker, not one per host core
    ("150000 100000", 2),   # a fraction rounds up: 1.5 CPUs keep 2 workers busy
    ("50000 100000", 1),    # never fewer than 1
])
def test_workers_follow_the_quota_not_the_hosts_cores(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)

    assert available_cpus(path) == min(expected, len(os.sched_getaffinity(0)))


def test_without_a_quota_the_affinity_mask_counts(tmp_path):
    path = tmp_path / "cpu.max"
    path.write_text("max 100000")

    assert available_cpus(path) == len(os.sched_getaffinity(0))


def test_the_budget_counts_a_release_overlap_and_the_reserve():
    budget = ConnectionBudget(workers=1, pool_size=10, max_overflow=10, replicas=4, others=2, max_connections=100)

    assert budget.web == 80 and budget.needed == 82 and budget.available == 90 and budget.fits
    assert "82 connections" in budget.describe() and "90" in budget.describe()
    assert not ConnectionBudget(workers=8, pool_size=10, max_overflow=10, replicas=4, others=2,
                                max_connections=100).fits
