"""The alert rules of deploy/prometheus/ checked and unit-tested by promtool, and every alert
covered by at least one test where it fires and one where it must not."""

from __future__ import annotations

import subprocess

import yaml

from lifecycle.core.config import PROJECT_ROOT
from tests.tools import prometheus_tool

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
TESTS = sorted((PROJECT_ROOT / "deploy" / "prometheus").glob("alerts*_test.yml"))


def test_promtool_checks_the_rules():
    done = subprocess.run([str(prometheus_tool("promtool")), "check", "rules", str(RULES)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_pass():
    done = subprocess.run([str(prometheus_tool("promtool")), "test", "rules", *(t.name for t in TESTS)],
                          cwd=RULES.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    fires, quiet = set(), set()
    for case in (c for t in TESTS for c in yaml.safe_load(t.read_text())["tests"]):
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"


def test_a_broken_rule_is_refused(tmp_path):
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES.read_text().replace("lifecycle_erasure_requests_overdue > 0",
                                                "lifecycle_erasure_requests_overdue >", 1))
    done = subprocess.run([str(prometheus_tool("promtool")), "check", "rules", str(broken)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def test_every_dashboard_query_is_valid_promql(tmp_path):
    import json

    dashboard = json.loads((PROJECT_ROOT / "deploy" / "grafana" / "lifecycle.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = tmp_path / "dashboard.yml"  # promtool parses recording rules: a cheap PromQL syntax check
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    done = subprocess.run([str(prometheus_tool("promtool")), "check", "rules", str(rules)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
