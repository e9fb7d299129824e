"""What operators and integrators read without a token: liveness, readiness, metrics and the OpenAPI
document (docs/observability.md, docs/openapi.json)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lifecycle.streams.http.common import Services, ServiceView

__all__ = ["PAGES"]


class Healthz(ServiceView):
    async def get(self, request: Any) -> Any:
        return self.json({"status": "ok"})


class Readyz(ServiceView):
    async def get(self, request: Any) -> Any:
        health = self.services.pipeline.health
        checks = {"consumer_group_joined": health.ready}
        ok = all(checks.values())
        # A log reset is reported, not a failure: the intake has already started again. A failing
        # connector is reported too: this worker is ready, and the alert names the child.
        return self.json({"status": "ready" if ok else "starting", "checks": checks,
                          "log_resets": health.log_resets, "failing_children": failing_children(self.services)},
                         status=200 if ok else 503)


class Metrics(ServiceView):
    async def get(self, request: Any) -> Any:
        failing_children(self.services)
        body = generate_latest(self.services.pipeline.metrics.registry)
        return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])


class OpenAPI(ServiceView):
    async def get(self, request: Any) -> Any:
        return self.bytes(self.services.openapi, content_type="application/json")


def failing_children(services: Services) -> list[str]:
    """The processes `up` reports failing; this worker keeps serving (names only, no data). The gauge
    of a child seen failing before goes back to 0 once it is not."""
    try:
        failing = [str(c) for c in json.loads(services.children.read_text()).get("failing", [])][:64]
    except (OSError, ValueError, AttributeError):
        failing = []
    seen = services.seen_failing
    for child in seen | set(failing):
        services.pipeline.metrics.child_failing.labels(child).set(1 if child in failing else 0)
    seen.update(failing)
    return failing


PAGES: dict[str, type[ServiceView]] = {"/healthz": Healthz, "/readyz": Readyz, "/metrics": Metrics,
                                       "/openapi.json": OpenAPI}
