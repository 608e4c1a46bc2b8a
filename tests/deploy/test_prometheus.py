"""deploy/prometheus/ as Prometheus's own tool reads it: the scrape config and the rules are valid
(`promtool check`), every alert passes its unit tests (`promtool test rules`), and those tests
would catch any alert whose threshold is broken: ignored (it fires whatever the value) or
inverted (it fires exactly when it should not)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import REPO
from harness.process import find_binary

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules"
ALERTS = RULES / "alerts.yml"
ALERT_TESTS = RULES / "alerts.test.yml"


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([find_binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
            if "alert" in rule]


ALERT_NAMES = [rule["alert"] for rule in alert_rules()]


def test_promtool_accepts_the_scrape_config_and_the_rule_files_it_loads():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["rule_files"]
    assert sorted(loaded) == ["rules/alerts.yml", "rules/recording.yml"]


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", "rules/recording.yml", "rules/alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_passes_its_unit_tests():
    result = promtool("test", "rules", ALERT_TESTS.name, cwd=RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet():
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert cases == {name: {True, False} for name in ALERT_NAMES}


def test_every_alert_says_what_to_do_in_the_operations_guide():
    guide = (REPO / "docs" / "operations.md").read_text()
    assert [name for name in ALERT_NAMES if not re.search(rf"^#### `{name}`$", guide, re.MULTILINE)] == []


COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?![=~])")
COMPLEMENT = {"==": "!=", "!=": "==", ">=": "<", "<=": ">", ">": "<=", "<": ">="}


def broken(expr: str, breakage: str) -> str:
    """The alert's condition with each threshold comparison (outside label matchers) ignored
    (`bool` keeps every series, whatever its value) or inverted."""
    def change(match: re.Match) -> str:
        return f"{match.group(1)} bool" if breakage == "ignores its threshold" else COMPLEMENT[match.group(1)]

    parts = re.split(r"(\{[^}]*\})", expr)  # label matchers ({route!~"..."}) stay as they are
    changed = "".join(part if part.startswith("{") else COMPARISON.sub(change, part) for part in parts)
    assert changed != expr, f"no threshold found in {expr!r}"
    return changed


@pytest.mark.parametrize("breakage", ["ignores its threshold", "inverts its threshold"])
@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_the_unit_tests_catch_an_alert_whose_threshold_is_broken(tmp_path, alert, breakage):
    """An alert that fires whatever the value would fail a quiet case; one whose comparison is
    turned around fails the case where it should fire (and most quiet ones too)."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = broken(rule["expr"], breakage)
    (rules / ALERTS.name).write_text(yaml.safe_dump(document, sort_keys=False))

    result = promtool("test", "rules", ALERT_TESTS.name, cwd=rules)

    assert result.returncode != 0, f"{alert} that {breakage} still passes its tests"
    assert f"alertname: {alert}" in result.stdout + result.stderr
