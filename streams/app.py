"""The Faust application: configuration for our brokers and the agents of every processor.

One app per worker process, built by ``build_app`` from the settings so tests can build their
own with a fresh metrics registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from typing import Any

import psycopg

import faust
from prometheus_client import CollectorRegistry

from connectors.stores import retention_categories
from lifecycle.config import Settings
from lifecycle.errors import LifecycleError
from lifecycle.policy import load_policy
from schemas.catalog import Catalog, load_catalog
from schemas.codec import Codec
from schemas.registry import make_registry
from streams.clock import Clock, make_clock
from schemas.errors import DecodeError
from streams.db import Database, apply_schema, describe
from streams.erasure import apply_acks, erasure_tick
from streams.intake import Origin, Rejected, dead_letter
from streams.intake_loop import IntakeLoop
from streams.lag import LagProbe, pipeline_groups
from streams.metrics import Metrics
from streams.outbox import relay_once
from streams.retention import apply_retention_acks, retention_tick
from streams.processors import Context, all_processors

__all__ = ["Pipeline", "build_app"]

log = logging.getLogger("lifecycle.worker")

ACKS_BATCH = 500
ACKS_WITHIN_S = 0.2
TICK_INTERVAL_S = 1.0
LAG_INTERVAL_S = 10.0
RELAY_IDLE_S = 0.1


@dataclasses.dataclass
class Pipeline:
    """The app and what its agents share."""

    app: _App
    settings: Settings
    codec: Codec
    metrics: Metrics
    clock: Clock
    context: Context
    dead_letters: Any = None  # the dead-letters topic, shared by every stage that rejects
    ready: bool = False
    acks_joined: bool = False

    def update_ready(self) -> None:
        """Ready once both consumers have their partitions: the intake's and Faust's (acks)."""
        intake = self.app.intake
        self.ready = self.acks_joined and intake is not None and intake.assigned
        self.metrics.worker_ready.set(1 if self.ready else 0)


class _App(faust.App):
    """Faust starts app tasks only once its own consumer has joined its group; the intake loop
    starts with the app instead, so that both groups are joined at once (a join waits about half
    the session timeout)."""

    intake: Any = None

    async def on_start(self) -> None:
        await super().on_start()
        if self.intake is not None:
            self.add_future(self.intake.run())


def _credentials(settings: Settings) -> Any:
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    context = settings.kafka_ssl_context()
    if proto.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def build_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Clock | None = None,
    catalog: Catalog | None = None,
) -> Pipeline:
    """Build the Faust app with every agent registered."""
    catalog = catalog or load_catalog()
    policy = load_policy(settings.retention_policy)  # refused at start when invalid
    registry = registry or CollectorRegistry()
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    # Faust runs the acks agent, the timers and the HTTP API; the input topics are read by the
    # intake loop under the group `app_id` (streams/intake_loop.py).
    app = _App(
        f"{settings.app_id}-acks",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(settings.state_dir / "faust"),
        topic_partitions=4,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=1,
        broker_commit_interval=0.5,
        web_enabled=True,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_graph_enabled=False,
        web_tables_enabled=False,
    )
    codec = Codec(make_registry(settings.schema_registry_url, catalog), catalog, topic_prefix=settings.topic_prefix)
    metrics = Metrics.create(registry, catalog, categories=[c.name for c in policy.swept()],
                             stores=settings.erasure_stores, swept_by=retention_categories)
    clock = clock or make_clock(settings.clock)
    hash_key = prepare_database(settings, clock)
    pipeline = Pipeline(
        app=app,
        settings=settings,
        codec=codec,
        metrics=metrics,
        clock=clock,
        context=Context(settings=settings, codec=codec, clock=clock, metrics=metrics, hash_key=hash_key,
                        policy=policy),
    )
    pipeline.dead_letters = _raw_topic(app, settings.topic("dead-letters"))
    _register_intake(pipeline, catalog)
    _register_acks(pipeline)
    _register_background(pipeline)
    _register_lag(pipeline, pipeline_groups(settings, list(catalog.input_topics)))
    from streams.web import register_views

    register_views(pipeline)

    @app.on_rebalance_complete.connect
    async def _ready(sender: Any, **kwargs: Any) -> None:
        pipeline.acks_joined = True
        pipeline.update_ready()

    return pipeline


def prepare_database(settings: Settings, clock: Clock) -> bytes:
    """Apply the schema, resume the event-time clock, and return the hashing key (configured, or
    generated once per deployment and kept in the database)."""
    if not settings.postgres_dsn:
        raise LifecycleError("the worker needs LIFECYCLE_POSTGRES_DSN")
    apply_schema(settings.postgres_dsn)
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO erasure_stores (store) SELECT unnest(%s::text[]) ON CONFLICT (store) DO UPDATE "
                     "SET active = true", (list(settings.erasure_stores),))
        conn.execute("UPDATE erasure_stores SET active = false WHERE NOT (store = ANY(%s))",
                     (list(settings.erasure_stores),))
        row = conn.execute("SELECT event_time_ms FROM clock_state WHERE id = 1").fetchone()
        if row:
            clock.observe(int(row[0]))
        if settings.hash_key:
            return settings.hash_key.encode()
        conn.execute(
            "INSERT INTO pipeline_secrets (name, value) VALUES ('hash_key', %s) ON CONFLICT DO NOTHING",
            (secrets.token_bytes(32),),
        )
        key = conn.execute("SELECT value FROM pipeline_secrets WHERE name = 'hash_key'").fetchone()
        return bytes(key[0])


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )


def _register_intake(pipeline: Pipeline, catalog: Catalog) -> None:
    by_contract = {p.topic: p for p in all_processors()}
    processors = {pipeline.settings.topic(t): by_contract[t] for t in catalog.input_topics}

    async def send(origin: Origin, value: bytes | None, rejected: Rejected) -> Any:
        return await send_dead_letter(pipeline, origin, value, rejected)

    pipeline.app.intake = IntakeLoop(pipeline, processors, send)


def _register_acks(pipeline: Pipeline) -> None:
    """Store acknowledgements from `erasure-acks` (erasures and retention sweeps), applied in batches."""
    app, codec, settings = pipeline.app, pipeline.codec, pipeline.settings
    db = Database(settings.postgres_dsn or "")

    async def acks(stream: Any) -> None:
        async for events in stream.take_events(ACKS_BATCH, within=ACKS_WITHIN_S):
            good, sweeps, pending = [], [], []
            for event in events:
                msg = event.message
                try:
                    decoded = codec.decode(msg.value, topic="erasure-acks")
                    (sweeps if decoded.record.short_name == "RetentionAck" else good).append(decoded.value)
                except DecodeError as exc:
                    rejected = Rejected(exc.reason, type(exc).__name__, str(exc), stage="erasure-acks")
                    origin = Origin(msg.topic, msg.partition, msg.offset, _ts_ms(msg), msg.key)
                    pending.append(await send_dead_letter(pipeline, origin, msg.value, rejected))
                    pipeline.metrics.events_rejected.labels("erasure-acks", exc.reason).inc()
            if good:
                await db.run("erasure acks", lambda conn: apply_acks(conn, pipeline.context, good))
            if sweeps:
                await db.run("retention acks", lambda conn: apply_retention_acks(conn, pipeline.context, sweeps))
            for fut in pending:
                await fut

    acks.__name__ = acks.__qualname__ = "erasure_acks"
    app.agent(_raw_topic(app, settings.topic("erasure-acks")), name="erasure-acks")(acks)


def _register_background(pipeline: Pipeline) -> None:
    """The clock-driven ticks of every processor and the outbox relay."""
    app = pipeline.app
    tick_db = Database(pipeline.settings.postgres_dsn or "")
    relay_db = Database(pipeline.settings.postgres_dsn or "")
    processors = all_processors()
    published = pipeline.metrics.outbox_published
    prefix = pipeline.settings.topic_prefix

    @app.timer(interval=TICK_INTERVAL_S)
    async def tick() -> None:
        now = pipeline.clock.now_ms()
        for processor in processors:
            try:
                await tick_db.run(f"tick {processor.topic}",
                                  lambda conn, p=processor: p.tick(conn, now, pipeline.context))
            except Exception as exc:  # the next tick tries again; never kill the timer
                log.warning("tick of %s failed: %s", processor.topic, describe(exc))
        try:
            await tick_db.run("erasure tick", lambda conn: erasure_tick(conn, pipeline.context, now))
        except Exception as exc:
            log.warning("erasure tick failed: %s", describe(exc))
        try:
            await tick_db.run("retention tick",
                              lambda conn: retention_tick(conn, pipeline.context, pipeline.context.policy, now))
        except Exception as exc:
            log.warning("retention tick failed: %s", describe(exc))

    def count(topics: list[str]) -> None:
        for topic in topics:
            published.labels(topic[len(prefix):] if topic.startswith(prefix) else topic).inc()

    @app.task
    async def relay() -> None:
        while True:
            try:
                sent = await relay_once(relay_db, app.producer, count)
            except Exception as exc:
                log.warning("outbox relay failed: %s", describe(exc))
                sent = 0
            if sent == 0:
                await asyncio.sleep(RELAY_IDLE_S)


def _register_lag(pipeline: Pipeline, groups: dict[str, list[str]]) -> None:
    probe = LagProbe(pipeline.settings, groups, pipeline.metrics)

    @pipeline.app.timer(interval=LAG_INTERVAL_S)
    async def consumer_lag() -> None:
        await asyncio.to_thread(probe.measure)

    @pipeline.app.on_before_shutdown.connect
    async def _close_probe(sender: Any, **kwargs: Any) -> None:
        probe.close()


async def send_dead_letter(pipeline: Pipeline, origin: Origin, original: bytes | None, rejected: Rejected) -> Any:
    """Queue the dead letter of a consumed record; returns the delivery future to await before
    the record's batch is acknowledged."""
    key, value, headers = dead_letter(pipeline.codec, rejected, origin, original, pipeline.clock.now_ms())
    log.warning("dead-lettered %s[%d]@%d: %s", origin.topic, origin.partition, origin.offset, rejected.reason)
    return await pipeline.dead_letters.send(key=key, value=value, headers=headers)


def _ts_ms(msg: Any) -> int | None:
    ts = getattr(msg, "timestamp", None)
    return int(ts * 1000) if ts else None
