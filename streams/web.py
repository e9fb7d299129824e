"""HTTP views served by every worker on one port: health, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from streams.app import Pipeline

__all__ = ["register_views"]


def register_views(pipeline: Pipeline) -> None:
    app = pipeline.app

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        checks = {"consumer_group_joined": pipeline.ready}
        ok = all(checks.values())
        return web.json({"status": "ready" if ok else "starting", "checks": checks}, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        body = generate_latest(pipeline.metrics.registry)
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])
