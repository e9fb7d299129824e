"""A real Prometheus server scrapes a running `lifecycle up` (worker and every connector) and
loads the alert rules; the counters are read back through Prometheus' own HTTP API, and no
label value it stored carries the personal data the events held."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.parse

import yaml

from lifecycle.core.config import PROJECT_ROOT
from lifecycle.embedded.process import stop_process
from lifecycle.embedded.prometheus import EmbeddedPrometheus
from lifecycle.supervisor import http_get
from tests.e2e.test_cli import _env, _lifecycle, _wait_ready
from tests.helpers import T0, event, post, wait_for
from tests.procs import wait_until_gone
from tests.tools import prometheus_tool
from tests.unit.samples import PII

TOKEN = "scrape-test-token"


def _query(port: int, promql: str) -> list[dict]:
    try:
        status, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}",
                                timeout_s=5)
    except OSError:  # Prometheus still starting
        return []
    if status == 503:  # up, still loading its storage
        return []
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def _value(port: int, promql: str) -> float:
    result = _query(port, promql)
    return float(result[0]["value"][1]) if result else -1.0


def test_prometheus_scrapes_the_pipeline_and_sees_the_counters_move(tmp_path):
    prometheus_tool("prometheus")  # skip with the reason where Prometheus cannot be had
    state = tmp_path / "state"
    env = _env(state, LIFECYCLE_HTTP_TOKEN=TOKEN)
    api = f"http://127.0.0.1:{env['LIFECYCLE_HTTP_PORT']}"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml")],
        "scrape_configs": [{"job_name": "lifecycle",
                            "file_sd_configs": [{"files": [str(state / "scrape-targets.json")],
                                                 "refresh_interval": "1s"}]}],
    }))
    with open(tmp_path / "up.log", "wb") as out:
        up = subprocess.Popen(_lifecycle("up"), env=env, stdout=out, stderr=subprocess.STDOUT)
    prom = None
    try:
        _wait_ready(env, up)
        wait_for(lambda: (state / "scrape-targets.json").exists(), what="the scrape targets")
        prom = EmbeddedPrometheus(config, tmp_path / "tsdb", tmp_path / "prometheus.log")
        prom.start()
        prom_port = prom.port
        connectors = len(json.loads((state / "scrape-targets.json").read_text())[1]["targets"])
        wait_for(lambda: _value(prom_port, 'sum(up{job="lifecycle-worker"})') == 1, deadline_s=60,
                 what="Prometheus to scrape the worker")
        wait_for(lambda: _value(prom_port, 'sum(up{job="lifecycle-connector"})') == connectors, deadline_s=60,
                 what="Prometheus to scrape every connector")
        before = _value(prom_port, "sum(lifecycle_events_ingested_total)")
        assert before == 0

        events = [event("account.registered", T0 + i, account=f"acc-prom-{i}", email=PII["email"],
                        first_name=PII["first_name"], last_name=PII["last_name"], phone=PII["phone"])
                  for i in range(5)]
        events.append(event("account.closed", T0 + 100, account="acc-prom-0"))
        status, _ = post(f"{api}/v1/events", events, TOKEN)
        assert status == 202
        wait_for(lambda: _value(prom_port, "sum(lifecycle_events_ingested_total)") == 6, deadline_s=60,
                 what="the ingested counter to reach 6 in Prometheus")
        assert _value(prom_port, 'sum(lifecycle_events_ingested_total{event_type="account.registered"})') == 5
        wait_for(lambda: _value(prom_port, "sum(lifecycle_erasure_requests_completed_total)") == 1, deadline_s=60,
                 what="the erasure to complete, seen in Prometheus")
        wait_for(lambda: _value(prom_port, 'sum(lifecycle_connector_orders_total{status=~"erased|nothing_found"})')
                 == connectors, deadline_s=30, what="every connector's order counter")
        # Measured by the pipeline: the worker group's committed offsets have reached the 6 events.
        wait_for(lambda: _value(prom_port, 'lifecycle_consumer_committed_offset{group="worker", '
                                           'topic="account-events"}') == 6, deadline_s=30,
                 what="consumer offsets measured by the pipeline")
        assert _value(prom_port, 'lifecycle_consumer_lag{group="worker", topic="account-events"}') == 0

        status, body = http_get(f"http://127.0.0.1:{prom_port}/api/v1/rules", timeout_s=5)
        rules = [r["name"] for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        ours = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
        assert sorted(rules) == sorted(r["alert"] for g in ours["groups"] for r in g["rules"])
        assert "LifecycleErasureOverdue" in rules and "LifecycleErasureProofRegressed" in rules

        status, body = http_get(f"http://127.0.0.1:{prom_port}/api/v1/labels", timeout_s=5)
        values = []
        for label in json.loads(body)["data"]:
            _, raw = http_get(f"http://127.0.0.1:{prom_port}/api/v1/label/{label}/values", timeout_s=5)
            values.extend(json.loads(raw)["data"])
        assert [v for v in values if any(p in v for p in PII.values()) or "acc-prom" in v] == []
    finally:
        if prom is not None:
            prom.stop()
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        finally:
            stop_process(up, signal.SIGKILL, timeout_s=1)
        assert wait_until_gone(str(state)) == []
