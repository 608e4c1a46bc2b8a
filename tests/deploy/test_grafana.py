"""deploy/grafana/flask-kit.json, the dashboard, checked without Grafana: the structure Grafana
imports (unique panel ids, a grid of 24 columns with no overlap, every query on the templated
Prometheus data source), every query valid PromQL (promtool), and every metric it reads one the
app, the rules or the exporters define. tests/test_prometheus.py runs each query on a real
Prometheus."""

from __future__ import annotations

import json
import re
import subprocess

import yaml
from prometheus_client import REGISTRY

import app.metrics  # noqa: F401 - registers the app's metrics
from harness import REPO
from harness.process import find_binary

DASHBOARD = REPO / "deploy" / "grafana" / "flask-kit.json"
RULES = REPO / "deploy" / "prometheus" / "rules"
# Exporters' own metrics (nginx-prometheus-exporter, the blackbox exporter), and the backup's
# (scripts/backup-schedule.sh)
OTHER_METRICS = {"nginx_http_requests_total", "nginx_connections_active", "probe_ssl_earliest_cert_expiry",
                 "backup_last_success_timestamp_seconds", "backup_max_age_seconds"}
OWN_PREFIXES = ("http_", "db_pool_", "redis_", "readiness_", "gunicorn_", "app_", "backup", "job:", "instance:",
                "nginx_", "probe_")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_the_panels_form_a_grid_grafana_can_lay_out():
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        area = {(x, y) for x in columns for y in rows}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_every_query_uses_the_templated_prometheus_data_source():
    board = dashboard()
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    source = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    for panel in board["panels"]:
        assert panel["datasource"] == source and panel["targets"], panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
        assert all(target["datasource"] == source for target in panel["targets"])


def test_every_query_is_valid_promql(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{number}", "expr": expr} for number, expr in enumerate(queries())]}]}
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([find_binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def defined_metrics() -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names = {metric.name + suffix for metric in REGISTRY.collect() for suffix in suffixes.get(metric.type, ())}
    for path in RULES.glob("[!.]*.yml"):
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            names |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return names | OTHER_METRICS


def test_every_metric_a_panel_reads_is_defined_somewhere():
    known = defined_metrics()
    read = {name for expr in queries() for name in re.findall(r"[a-z_:][a-z0-9_:]*", expr)
            if name.startswith(OWN_PREFIXES)}
    assert read and read - known == set()
