"""The worker's Faust application: the clock-driven ticks, the outbox and ingest-journal relays,
the state rebuild, consumer lag and the HTTP API. Two consumer loops of the worker's own start
with it: the intake loop on the input topics (streams/ingest/loop.py) and the acks loop on
`erasure-acks` (streams/runtime/acks.py).

One app per worker process, built by ``build_app`` from the settings so tests can build their
own with a fresh metrics registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
import psycopg
from prometheus_client import CollectorRegistry

from lifecycle.core.clock import Clock, make_clock
from lifecycle.core.config import Settings
from lifecycle.core.datakeys import open_data_keys
from lifecycle.core.orderkeys import load_order_signer
from lifecycle.core.pgroles import as_component
from lifecycle.core.policy import load_policy
from lifecycle.schemas.catalog import Catalog, load_catalog
from lifecycle.schemas.codec import Codec
from lifecycle.schemas.registry import make_registry
from lifecycle.streams.features import all_processors, answer_kinds, ticks
from lifecycle.streams.http.auth import load_tokens, middleware
from lifecycle.streams.http.views import register_views
from lifecycle.streams.ingest.journal import JournalRelay
from lifecycle.streams.ingest.loop import IntakeLoop
from lifecycle.streams.pipeline import Pipeline, WorkerApp
from lifecycle.streams.rebuild import republish_state, tombstone_erased
from lifecycle.streams.runtime.acks import AckKeys, AcksLoop
from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.database import Database, describe
from lifecycle.streams.runtime.deadletters import DeadLetters
from lifecycle.streams.runtime.decoding import Origin, Rejected, dead_letter
from lifecycle.streams.runtime.feature import Tick
from lifecycle.streams.runtime.health import Health
from lifecycle.streams.runtime.lag import LagProbe, pipeline_groups
from lifecycle.streams.runtime.metrics import Metrics
from lifecycle.streams.runtime.outbox import Relay
from lifecycle.streams.runtime.sealing import destroy_past_letter_keys, period_subject
from lifecycle.streams.runtime.sending import batched
from lifecycle.streams.runtime.startup import prepare_database
from lifecycle.streams.runtime.wakeup import OUTBOX_CHANNEL, Wakeup

__all__ = ["Pipeline", "build_app"]

log = logging.getLogger("lifecycle.worker")

TICK_INTERVAL_S = 1.0
LAG_INTERVAL_S = 10.0
RELAY_IDLE_S = 1.0  # the outbox relay's fallback: a commit that queued records wakes it at once
JOURNAL_IDLE_S = 0.5


def build_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Clock | None = None,
    catalog: Catalog | None = None,
    swept_by: Callable[[str], Iterable[str]] = lambda store: (),
    store_grants: Mapping[str, tuple[str, ...]] | None = None,
) -> Pipeline:
    """Build the Faust app with every agent registered. ``swept_by`` names the categories each
    store sweeps by time, so their metrics exist from the start, and ``store_grants`` what each
    store's database role may touch (lifecycle/core/pgroles.py); the shell passes the stores'
    (the pipeline itself knows no store: connectors/ stands beside it, not below)."""
    catalog = catalog or load_catalog()
    policy = load_policy(settings.retention_policy)  # refused at start when invalid
    registry = registry or CollectorRegistry()
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    clock = clock or make_clock(settings.clock)
    keys, joined = prepare_database(settings, clock, store_grants or {})
    # The stores of other teams registered with `lifecycle store add` count as configured ones here
    # (metric labels, consumer lag); new erasures read the registry itself, so one registered
    # while the worker runs is waited for at once.
    settings = dataclasses.replace(settings, erasure_stores=(*settings.erasure_stores, *joined))
    metrics = Metrics.create(registry, catalog, categories=[c.name for c in policy.swept()],
                             stores=settings.erasure_stores, swept_by=swept_by)

    def refused(path: str, reason: str) -> None:
        metrics.http_refused.labels(reason).inc()
        if path.rstrip("/") == "/v1/events" and reason == "unauthorized":
            metrics.events_rejected.labels("http", "unauthorized").inc()

    guard = middleware(load_tokens(settings), settings.http_max_in_flight, refused)  # a bad tokens file: here
    app = _worker_app(settings, guard)
    codec = Codec(make_registry(settings.schema_registry_url, catalog), catalog, topic_prefix=settings.topic_prefix)
    data_keys = open_data_keys(settings, keys)  # a wrong master key stops the start here
    orders = load_order_signer(settings)
    settings = as_component(settings, "worker")  # from here on, the worker's own role
    context = PipelineContext(settings=settings, codec=codec, clock=clock, metrics=metrics, keys=keys, policy=policy,
                      data_keys=data_keys, orders=orders)
    health = Health(metrics)
    letters = DeadLetters(context, Database(settings.postgres_dsn or ""),
                          _raw_topic(app, settings.topic("dead-letters")))

    def producer_started() -> bool:
        return bool(app.producer.started)

    by_contract = {p.topic: p for p in all_processors()}
    pipeline = Pipeline(
        app=app, settings=settings, codec=codec, metrics=metrics, clock=clock, context=context, health=health,
        dead_letters=letters,
        intake=IntakeLoop(context, health, {settings.topic(t): by_contract[t] for t in catalog.input_topics},
                          letters.send, producer_started),
        acks=AcksLoop(context, health, AckKeys(settings.postgres_dsn or "", data_keys.wrapper), letters.send,
                      producer_started, answer_kinds()),
    )
    app.start_with(pipeline.intake.run, pipeline.acks.run)
    _register_background(pipeline)
    _register_lag(pipeline, pipeline_groups(settings, list(catalog.input_topics)))
    register_views(pipeline)

    return pipeline


def _worker_app(settings: Settings, guard: Any) -> WorkerApp:
    """The Faust app: producer, HTTP server (behind ``guard``, the auth middleware), tasks, timers."""
    # Faust runs the tasks, the timers and the HTTP API; the input topics are read by the
    # intake loop under the group `app_id` (streams/ingest/loop.py).
    return WorkerApp(
        f"{settings.app_id}-web",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=settings.faust_credentials(),
        store="memory://",
        datadir=str(settings.state_dir / "faust"),
        topic_partitions=4,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_batch_size=256 * 1024,  # a record batch per partition (streams/runtime/sending.py)
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=1,
        broker_commit_interval=0.5,
        web_enabled=True,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_graph_enabled=False,
        # auto_decompress off: a body is never decompressed (the middleware answers 415 to any
        # Content-Encoding), so a broken one cannot raise inside the server before it does.
        web_application_options={"middlewares": [guard], "handler_args": {"auto_decompress": False}},
        web_tables_enabled=False,
    )


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )


def _register_background(pipeline: Pipeline) -> None:
    """The clock-driven ticks of every processor and the outbox relay."""
    app = pipeline.app
    tick_db = Database(pipeline.settings.postgres_dsn or "")
    settings, ctx = pipeline.settings, pipeline.context
    def oversize_letter(topic: str, key: bytes | None, size: int) -> tuple[str, bytes | None, bytes, list[Any]]:
        rejected = Rejected("record_too_large", "RecordTooLarge",
                            f"an output record of {size} bytes is over the producer's limit; not published",
                            stage="outbox")
        letter_key, value, headers = dead_letter(pipeline.codec, rejected, Origin(topic, -1, -1, None, key), None,
                                                 pipeline.clock.now_ms())
        return settings.topic("dead-letters"), letter_key, value, headers

    relay_loop = Relay(settings, Database(settings.postgres_dsn or ""), ctx.keys, pipeline.clock, pipeline.metrics,
                       oversize_letter, ctx.signer)
    journal = JournalRelay(Database(settings.postgres_dsn or ""))
    journal_send = batched(app.kafka_producer)
    rebuild_db = Database(settings.postgres_dsn or "")

    @app.task
    async def journal_relay() -> None:
        await _relay_forever("ingest journal relay", lambda: journal.once(journal_send), JOURNAL_IDLE_S)

    @app.task
    async def rebuild() -> None:
        while True:
            await pipeline.health.rebuild_wanted.wait()
            pipeline.health.rebuild_wanted.clear()
            try:
                await republish_state(rebuild_db, ctx)
                await tombstone_erased(rebuild_db, ctx)
            except Exception as exc:  # tried again at the next reset; the state stays in PostgreSQL
                log.warning("state topics not republished: %s", describe(exc))

    _register_ticks(pipeline, tick_db, ticks())

    wakeup = Wakeup(settings.postgres_dsn or "", OUTBOX_CHANNEL)

    @app.task
    async def outbox_listener() -> None:
        await wakeup.listen()

    @app.task
    async def relay() -> None:
        await _relay_forever("outbox relay", lambda: relay_loop.once(app.producer), RELAY_IDLE_S, wakeup)


def _register_ticks(pipeline: Pipeline, tick_db: Database, every_tick: list[Tick]) -> None:
    """Every feature's clock-driven work, once a second, then the dead-letter keys of a past period."""
    app, ctx = pipeline.app, pipeline.context
    letter_period = [""]  # the dead-letter key period last rotated (streams/runtime/sealing.py)

    @app.timer(interval=TICK_INTERVAL_S)
    async def tick() -> None:
        now = pipeline.clock.now_ms()
        for each in every_tick:  # each in its own transaction: one failing never stops the others
            try:
                await tick_db.run(each.what, functools.partial(_run_tick, tick=each, ctx=ctx, now=now))
            except Exception as exc:  # the next tick tries again; never kill the timer
                log.warning("%s failed: %s", each.what, describe(exc))
        period = period_subject(ctx.policy, now)
        if period != letter_period[0]:
            try:
                await tick_db.run("dead-letter keys", lambda conn: destroy_past_letter_keys(
                    conn, ctx.data_keys, ctx.policy, now))
                letter_period[0] = period
            except Exception as exc:
                log.warning("dead-letter keys not rotated: %s", describe(exc))


async def _relay_forever(what: str, once: Callable[[], Awaitable[int]], idle_s: float,
                         wakeup: Wakeup | None = None) -> None:
    """Run relay rounds back to back while they find work; when one finds none or fails, wait for
    ``wakeup`` (a commit that queued work), at most ``idle_s`` (the next round tries again: a
    relay task never dies)."""
    while True:
        if wakeup is not None:
            wakeup.clear()
        try:
            sent = await once()
        except Exception as exc:
            log.warning("%s failed: %s", what, describe(exc))
            sent = 0
        if sent == 0:
            if wakeup is not None:
                await wakeup.wait(idle_s)
            else:
                await asyncio.sleep(idle_s)


def _register_lag(pipeline: Pipeline, groups: dict[str, list[str]]) -> None:
    probe = LagProbe(pipeline.settings, groups, pipeline.metrics)

    @pipeline.app.timer(interval=LAG_INTERVAL_S)
    async def consumer_lag() -> None:
        await asyncio.to_thread(probe.measure)

    # mode types a handler's `signal` argument with a forward reference mypy resolves to nothing a
    # handler can match; the handler takes it as documented.
    @pipeline.app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _close_probe(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        probe.close()


async def _run_tick(conn: psycopg.AsyncConnection[Any], *, tick: Tick, ctx: PipelineContext, now: int) -> None:
    await tick.run(conn, ctx, now)
