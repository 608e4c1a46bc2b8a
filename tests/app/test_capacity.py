"""Worker sizing from the container's CPU quota (cgroup v2 and v1), and the connection
budget's arithmetic."""

import os

import pytest

from app.capacity import ConnectionBudget, available_cpus, cpu_quota


def cgroup_v2(root, cpu_max: str):
    (root / "cpu.max").write_text(cpu_max)
    return root


def cgroup_v1(root, quota: str, period: str = "100000", directory: str = "cpu"):
    (root / directory).mkdir()
    (root / directory / "cpu.cfs_quota_us").write_text(quota + "\n")
    (root / directory / "cpu.cfs_period_us").write_text(period + "\n")
    return root


@pytest.mark.parametrize("cpu_max, quota", [
    ("max 100000\n", None),          # no limit
    ("100000 100000\n", 1.0),        # cpus: 1.0
    ("150000 100000\n", 1.5),        # cpus: 1.5
    ("50000 100000\n", 0.5),
    ("garbage\n", None),
])
def test_a_v2_quota_is_read_from_cpu_max(tmp_path, cpu_max, quota):
    assert cpu_quota(cgroup_v2(tmp_path, cpu_max)) == quota


@pytest.mark.parametrize("directory", ["cpu", "cpu,cpuacct"])
@pytest.mark.parametrize("cfs_quota, quota", [("-1", None), ("100000", 1.0), ("150000", 1.5)])
def test_a_v1_quota_is_read_from_the_cfs_files(tmp_path, directory, cfs_quota, quota):
    assert cpu_quota(cgroup_v1(tmp_path, cfs_quota, directory=directory)) == quota


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert cpu_quota(tmp_path) is None


@pytest.mark.parametrize("quota, expected", [
    ("100000", 1),   # one CPU's worth on a bigger host: 1 worker, not one per host core
    ("150000", 2),   # a fraction rounds up: 1.5 CPUs keep 2 workers busy
    ("50000", 1),    # never fewer than 1
])
def test_workers_follow_the_quota_not_the_hosts_cores(tmp_path, quota, expected):
    host = len(os.sched_getaffinity(0))

    assert available_cpus(cgroup_v2(tmp_path, f"{quota} 100000")) == min(expected, host)
    assert available_cpus(cgroup_v1(tmp_path, quota)) == min(expected, host)


def test_without_a_quota_the_affinity_mask_counts(tmp_path):
    assert available_cpus(cgroup_v2(tmp_path, "max 100000")) == len(os.sched_getaffinity(0))


def test_the_budget_counts_a_release_overlap_and_the_reserve():
    budget = ConnectionBudget(workers=1, pool_size=10, max_overflow=10, replicas=4, others=2, max_connections=100)

    assert budget.web == 80 and budget.needed == 82 and budget.available == 90 and budget.fits
    assert budget.describe() == ("1 worker x (10 pool + 10 overflow) x 4 replicas + 2 others = 82 connections; "
                                 "Postgres allows 100 - 10 reserved = 90")
    assert not ConnectionBudget(workers=8, pool_size=10, max_overflow=10, replicas=4, others=2,
                                max_connections=100).fits
