"""`lifecycle front`: `POST /v1/events` in a process of its own, beside the workers.

A worker serves the route too, on the same core as its intake: every event posted there costs that
core twice, once to accept and once to apply (docs/performance.md, "The front doors"). A front
accepts exactly as the worker does (streams/http/ingestion.py: validated, sealed, journaled, then
sent) and applies nothing, so fronts scale with the clients and workers with the partitions.

It answers `POST /v1/events` (the `ingest` scope), `/healthz`, `/readyz` (the journal and the
broker reached) and `/metrics`; every other path is 404. It logs in to PostgreSQL as its own role,
`front` (lifecycle/core/pgroles.py), which may write the journal and the data keys and nothing else,
and it needs the master and hash keys but no token other than the ingest ones. SIGTERM: it answers
503 to new batches, waits for the ones on their way to the broker (the journal relay sends what it
could not), and exits. Start a worker first: the front creates no table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lifecycle.core.clock import make_clock
from lifecycle.core.config import Settings
from lifecycle.core.datakeys import open_data_keys
from lifecycle.core.keys import open_keyring
from lifecycle.core.pgroles import as_component
from lifecycle.schemas.catalog import load_catalog
from lifecycle.schemas.codec import Codec
from lifecycle.schemas.registry import make_registry
from lifecycle.streams.http.auth import Tokens, load_tokens, middleware
from lifecycle.streams.http.ingestion import Ingestion
from lifecycle.streams.runtime.database import Database, describe
from lifecycle.streams.runtime.sending import batched

__all__ = ["serve_front", "front_tokens"]

log = logging.getLogger("lifecycle.front")
SETTLE_S = 10.0  # at SIGTERM, how long batches on their way may still take


def front_tokens(settings: Settings) -> Tokens:
    """The ingest tokens alone: a front holds no token that reads or hands out keys."""
    return Tokens(tuple(entry for entry in load_tokens(settings).entries if "ingest" in entry[1]))


@dataclasses.dataclass
class _Metrics:
    registry: CollectorRegistry
    accepted: Counter
    rejected: Counter
    refused: Counter

    @classmethod
    def create(cls) -> _Metrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter("lifecycle_front_events_accepted", "Events a front answered 202 for (journaled).",
                    registry=registry),
            Counter("lifecycle_events_rejected", "Records refused (answered 4xx), by topic and reason code.",
                    ["topic", "reason"], registry=registry),
            Counter("lifecycle_http_refused", "HTTP requests refused before any view ran, by reason.", ["reason"],
                    registry=registry),
        )


async def serve_front(settings: Settings, port: int, ready: Any = None) -> None:
    """Serve until SIGTERM or SIGINT. ``ready(port)`` is called once the port is bound."""
    own = as_component(settings, "front")
    catalog = load_catalog()
    keyring = open_keyring(own, create=False, read_only=True)  # refused when not the database's
    data_keys = open_data_keys(own, keyring, create=False, read_only=True)
    codec = Codec(make_registry(settings.schema_registry_url, catalog), catalog, topic_prefix=settings.topic_prefix)
    metrics = _Metrics.create()
    stopping = asyncio.Event()
    db = Database(own.postgres_dsn or "")

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024, client_id="lifecycle-front", **settings.aiokafka_kwargs())

    ingestion = Ingestion(own, codec, make_clock(settings.clock), data_keys, db, batched(lambda: producer),
                          rejected=lambda reason: metrics.rejected.labels("http", reason).inc(),
                          too_slow=lambda: metrics.refused.labels("too_slow").inc(),
                          draining=stopping.is_set)

    async def events(request: web.Request) -> web.StreamResponse:
        status, body, headers = await ingestion.answer(request)
        if status == 202:
            metrics.accepted.inc(body["accepted"])
        return web.json_response(body, status=status, headers=headers)

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.StreamResponse:
        try:
            await db.run("front readiness", lambda conn: conn.execute("SELECT 1 FROM ingest_journal LIMIT 0"))
            await producer.client.fetch_all_metadata()
        except Exception as exc:
            return web.json_response({"ready": False, "reason": describe(exc)}, status=503)
        return web.json_response({"ready": not stopping.is_set()}, status=503 if stopping.is_set() else 200)

    async def scrape(request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def refused(path: str, reason: str) -> None:
        metrics.refused.labels(reason).inc()
        if path.rstrip("/") == "/v1/events" and reason == "unauthorized":
            metrics.rejected.labels("http", "unauthorized").inc()

    app = web.Application(middlewares=[middleware(front_tokens(settings), settings.http_max_in_flight, refused)],
                          client_max_size=1 << 21)
    app.router.add_post("/v1/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", scrape)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await producer.start()
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, port)
        await site.start()
        if ready is not None:
            ready(port)
        await stopping.wait()
        await ingestion.settle(SETTLE_S)
    finally:
        await runner.cleanup()
        await producer.stop()
        if db.conn is not None:
            await db.conn.close()
