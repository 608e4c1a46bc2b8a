"""The resilience drills (drills/), each a test: one native stack for the module, the faults
held shorter than `make drill` holds them, and any broken promise fails the test."""

from collections.abc import Iterator

import pytest

from drills import scenarios
from harness.stack import NativeStack
from harness.traffic import Users

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack() -> Iterator[NativeStack]:
    with NativeStack(scenarios.SETTINGS, fault_proxy=True) as stack:
        yield stack


@pytest.fixture(scope="module")
def users(stack) -> Iterator[Users]:
    users = Users(stack, scenarios.WORKERS)
    yield users
    users.close()


@pytest.mark.parametrize("drill, options", [
    # each fault that stalls outlasts the bound it tests (scenarios.SETTINGS) with SLACK: a missing
    # bound would show; a stopped server refuses at once
    (scenarios.postgres_stopped, {"hold_for": 3}),
    (scenarios.postgres_frozen, {"hold_for": 6}),
    (scenarios.postgres_black_holed, {"hold_for": 6}),
    (scenarios.postgres_restarted, {}),
    (scenarios.redis_stopped_then_frozen, {"hold_for": 4}),
    (scenarios.worker_killed, {}),
    (scenarios.logout_race, {}),
    (scenarios.login_flood, {"seconds": 6}),
    (scenarios.concurrent_writes, {"count": 200}),
    (scenarios.nginx_reloaded, {"reloads": 3}),
], ids=lambda value: getattr(value, "__name__", ""))
def test_drill_keeps_every_promise(stack, users, drill, options):
    result = drill(stack, users, **options)

    assert result.summary["requests"] > 0
    assert result.violations == [], result.notes
