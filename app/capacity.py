"""How much CPU this process may use, and whether a deploy's database connections fit.

A leaf module (standard library only): gunicorn.conf.py sizes its workers with it in the
master, and the production doctor (app/doctor.py) checks the budget with it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
# Connections Postgres keeps for superusers (superuser_reserved_connections = 3) plus a few
# for a human with psql and monitoring during an incident.
RESERVED_CONNECTIONS = 10


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """The CPUs this container's quota allows (1.5 for `cpus: 1.5`), or None if unlimited.

    cgroup v2 has `cpu.max` ("150000 100000"); v1 (older hosts, some Docker engines) has
    `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`. Docker's `cpus:` is such a quota:
    it limits time, not which CPUs run, so the affinity mask still shows every core."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
    except (OSError, ValueError):
        quota = period = None
        for v1 in ("cpu", "cpu,cpuacct"):
            try:
                quota = (cgroup / v1 / "cpu.cfs_quota_us").read_text().strip()
                period = (cgroup / v1 / "cpu.cfs_period_us").read_text().strip()
                break
            except OSError:
                continue
    if quota in (None, "max", "-1"):
        return None
    try:
        return int(quota) / int(period)
    except ValueError:
        return None


def available_cpus(cgroup: Path = CGROUP) -> int:
    """Whole CPUs this process may use: the cgroup quota rounded up, then the affinity mask
    (a cpuset or `taskset`), whichever is smaller; at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


@dataclass(frozen=True)
class ConnectionBudget:
    """The most connections a deploy can open to Postgres, against what the server allows."""

    workers: int
    pool_size: int
    max_overflow: int
    # the most web replicas running at once: a release starts new replicas beside the old
    # ones, so twice WEB_REPLICAS under scripts/deploy.sh, and WEB_REPLICAS plus the
    # rollout's surge under Kubernetes (WEB_ROLLOUT_SURGE, deploy/k8s)
    replicas: int
    # one-off and side services: migrate (1), backup (pg_dump holds 1)
    others: int
    max_connections: int
    reserved: int = RESERVED_CONNECTIONS

    @property
    def web(self) -> int:
        return self.workers * (self.pool_size + self.max_overflow) * self.replicas

    @property
    def needed(self) -> int:
        return self.web + self.others

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    def describe(self) -> str:
        return (f"{_count(self.workers, 'worker')} x ({self.pool_size} pool + {self.max_overflow} overflow) x "
                f"{_count(self.replicas, 'replica')} + {self.others} others = {self.needed} connections; Postgres "
                f"allows {self.max_connections} - {self.reserved} reserved = {self.available}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
