"""Finding 1's last part and Build 5 (issue 26): after 5 exits of one connector within 60 s, `up`
stopped the whole stack (exit 2), so one bad order or one misconfigured store took everything down.
Now the child is reported failing (/readyz, `lifecycle_stack_child_failing`, an alert) and started
again every minute, while the worker and the other connectors keep serving. Driven here with a
shipped store that cannot start: its signing key's path is a folder (a store of another team,
the earlier way to drive it, is no longer started by `up` at all: issue 27)."""

from __future__ import annotations

import json
import time

from lifecycle.supervisor import http_get
from tests.e2e.test_durable import Up
from tests.helpers import event, metric, wait_for


class _UpWithABrokenStore(Up):
    def env(self) -> dict[str, str]:
        return {**super().env(), "LIFECYCLE_ERASURE_STORES": "postgres,files"}


def test_a_connector_that_keeps_failing_is_reported_and_stops_nothing(tmp_path):
    up = _UpWithABrokenStore(tmp_path)
    (up.state / "secrets" / "stores" / "files.key").mkdir(parents=True)  # unreadable as a key: it exits
    try:
        up.start()

        def failing() -> list:
            status, body = http_get(up.url("/readyz"), timeout_s=2)
            return json.loads(body).get("failing_children", []) if status == 200 else []

        wait_for(lambda: failing() == ["connector files"], deadline_s=90,
                 what="the connector reported failing")
        assert up.proc is not None and up.proc.poll() is None, "`up` stopped"
        assert metric(up.url("/metrics"), "lifecycle_stack_child_failing", child="connector files") == 1
        assert b"reported failing; the rest of the stack keeps serving" in up.log.read_bytes()
        at = int(time.time() * 1000) - 60_000
        [event_id] = up.post([event("consent.cookies_granted", at, visitor="vis-still-served",
                                    purposes=["analytics"], policy_version="2026-01")])
        wait_for(lambda: up.sql("SELECT count(*) FROM processed_events WHERE event_id = %s",
                                (event_id,))[0][0] == 1, deadline_s=60, what="the event applied")
        assert up.proc.poll() is None
    finally:
        up.stop()
