"""The worker's Faust application: the `erasure-acks` agent, the clock-driven ticks, the outbox and
ingest-journal relays, the state rebuild, consumer lag and the HTTP API. The input topics are read
by the intake loop (streams/intake_loop.py), which starts with the app.

One app per worker process, built by ``build_app`` from the settings so tests can build their
own with a fresh metrics registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import faust
import psycopg
from prometheus_client import CollectorRegistry

from lifecycle_core.clock import Clock, make_clock
from lifecycle_core.config import Settings
from lifecycle_core.crypto import KeyWrapper
from lifecycle_core.datakeys import open_data_keys
from lifecycle_core.errors import LifecycleError
from lifecycle_core.keys import Keyring, key_file, open_keyring
from lifecycle_core.pgroles import as_component, setup_roles
from lifecycle_core.policy import load_policy
from lifecycle_core.storekeys import ack_signature_problem, ensure_store_keys, load_store_keys
from schemas.catalog import Catalog, load_catalog
from schemas.codec import Codec
from schemas.errors import DecodeError
from schemas.registry import make_registry
from streams.access import access_tick, answer_problem, apply_answers
from streams.db import Database, apply_schema, describe, with_retry
from streams.erasure import ack_problem, apply_acks, erasure_tick
from streams.http_auth import load_tokens, middleware
from streams.intake import Origin, Rejected, capped, dead_letter
from streams.intake_loop import IntakeLoop
from streams.journal import JournalRelay
from streams.lag import LagProbe, pipeline_groups
from streams.metrics import Metrics
from streams.outbox import Relay
from streams.processors import Context, all_processors
from streams.rebuild import republish_state, tombstone_erased
from streams.retention import apply_retention_acks, retention_tick
from streams.sealing import destroy_past_letter_keys, period_subject, seal_letter

__all__ = ["Pipeline", "build_app"]

log = logging.getLogger("lifecycle.worker")

ACKS_BATCH = 500
ACKS_WITHIN_S = 0.2
TICK_INTERVAL_S = 1.0
LAG_INTERVAL_S = 10.0
RELAY_IDLE_S = 0.1
JOURNAL_IDLE_S = 0.5


@dataclasses.dataclass
class Pipeline:
    """The app and what its agents share."""

    app: _App
    settings: Settings
    codec: Codec
    metrics: Metrics
    clock: Clock
    context: Context
    dead_letters: Any  # the dead-letters topic (raw bytes), shared by every stage that rejects
    keys_db: Database  # data keys fetched outside the stages' transactions (streams/sealing.py)
    ack_keys: AckKeys  # every store's signing key (lifecycle_core/storekeys.py)
    ready: bool = False
    acks_joined: bool = False
    log_resets: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # shown on /readyz
    rebuild_wanted: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def note_log_reset(self, topic: str, partition: int, stored: int, log_end: int) -> None:
        """The intake found a new or shorter log: count it, show it, have the state republished."""
        self.metrics.log_resets.labels(topic).inc()
        self.log_resets.append({"topic": topic, "partition": partition, "stored_offset": stored,
                                "log_end": log_end, "at_ms": time.time_ns() // 1_000_000})
        del self.log_resets[:-20]
        self.rebuild_wanted.set()

    def update_ready(self) -> None:
        """Ready once both consumers have their partitions: the intake's and Faust's (acks)."""
        intake = self.app.intake
        self.ready = self.acks_joined and intake is not None and intake.assigned
        self.metrics.worker_ready.set(1 if self.ready else 0)


class AckKeys:
    """The stores' ack keys, created for the configured stores at start and read again when an ack
    names a store or carries a signature they do not explain (a store added or rotated since), at
    most every RELOAD_S."""

    RELOAD_S = 5.0

    def __init__(self, settings: Settings, wrapper: KeyWrapper):
        self.settings, self.wrapper = settings, wrapper
        with psycopg.connect(settings.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
            ensure_store_keys(conn, wrapper, settings.erasure_stores)
            self.keys = load_store_keys(conn, wrapper)
        self._loaded = time.monotonic()

    def _load(self) -> dict[str, bytes]:
        with psycopg.connect(self.settings.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
            return load_store_keys(conn, self.wrapper)

    async def problem(self, store: str, value: bytes, headers: Any) -> tuple[str, str] | None:
        if isinstance(headers, Mapping):  # Faust gives a record's headers as a list or a mapping
            headers = list(headers.items())
        problem = ack_signature_problem(self.keys, store, value, headers)
        if problem is not None and problem[0] == "bad_signature" and time.monotonic() - self._loaded > self.RELOAD_S:
            self._loaded = time.monotonic()
            self.keys = await asyncio.to_thread(self._load)
            problem = ack_signature_problem(self.keys, store, value, headers)
        return problem


class _App(faust.App):
    """Faust starts app tasks only once its own consumer has joined its group; the intake loop
    starts with the app instead, so that both groups are joined at once (a join waits about half
    the session timeout)."""

    intake: Any = None

    async def on_start(self) -> None:
        await super().on_start()
        if self.intake is not None:
            self.add_future(self.intake.run())


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
    store's database role may touch (lifecycle_core/pgroles.py); the shell passes the stores'
    (the pipeline itself knows no store: connectors/ stands beside it, not below)."""
    catalog = catalog or load_catalog()
    policy = load_policy(settings.retention_policy)  # refused at start when invalid
    registry = registry or CollectorRegistry()
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    metrics = Metrics.create(registry, catalog, categories=[c.name for c in policy.swept()],
                             stores=settings.erasure_stores, swept_by=swept_by)

    def refused(path: str, reason: str) -> None:
        metrics.http_refused.labels(reason).inc()
        if path.rstrip("/") == "/v1/events" and reason == "unauthorized":
            metrics.events_rejected.labels("http", "unauthorized").inc()

    guard = middleware(load_tokens(settings), settings.http_max_in_flight, refused)  # a bad tokens file: here
    # Faust runs the acks agent, the timers and the HTTP API; the input topics are read by the
    # intake loop under the group `app_id` (streams/intake_loop.py).
    app = _App(
        f"{settings.app_id}-acks",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=settings.faust_credentials(),
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
        web_application_options={"middlewares": [guard]},
        web_tables_enabled=False,
    )
    codec = Codec(make_registry(settings.schema_registry_url, catalog), catalog, topic_prefix=settings.topic_prefix)
    clock = clock or make_clock(settings.clock)
    keys = prepare_database(settings, clock, store_grants or {})
    data_keys = open_data_keys(settings, keys)  # a wrong master key stops the start here
    settings = as_component(settings, "worker")  # from here on, the worker's own role
    pipeline = Pipeline(
        app=app,
        settings=settings,
        codec=codec,
        metrics=metrics,
        clock=clock,
        context=Context(settings=settings, codec=codec, clock=clock, metrics=metrics, keys=keys,
                        policy=policy, data_keys=data_keys),
        dead_letters=_raw_topic(app, settings.topic("dead-letters")),
        keys_db=Database(settings.postgres_dsn or ""),
        ack_keys=AckKeys(settings, data_keys.wrapper),
    )
    _register_intake(pipeline, catalog)
    _register_acks(pipeline)
    _register_background(pipeline)
    _register_lag(pipeline, pipeline_groups(settings, list(catalog.input_topics)))
    from streams.web import register_views

    register_views(pipeline)

    # mode types a handler's `signal` argument with a forward reference mypy resolves to nothing a
    # handler can match; the handlers below take it as documented.
    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _ready(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        pipeline.acks_joined = True
        pipeline.update_ready()

    return pipeline


def prepare_database(settings: Settings, clock: Clock, store_grants: Mapping[str, tuple[str, ...]]) -> Keyring:
    """Apply the schema and every component's role, resume the event-time clock, and return the
    hash keyring, refused when it is not the one this database was set up with
    (lifecycle_core/keys.py)."""
    if not settings.postgres_dsn:
        raise LifecycleError("the worker needs LIFECYCLE_POSTGRES_DSN")
    apply_schema(settings.postgres_dsn, lambda conn: setup_roles(conn, settings, settings.erasure_stores,
                                                                   store_grants))
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO erasure_stores (store) SELECT unnest(%s::text[]) ON CONFLICT (store) DO UPDATE "
                     "SET active = true", (list(settings.erasure_stores),))
        conn.execute("UPDATE erasure_stores SET active = false WHERE NOT (store = ANY(%s))",
                     (list(settings.erasure_stores),))
        # What the journal holds was accepted and not yet applied: the broker this worker meets may
        # not have it (an embedded broker restarted with the stack), so it is sent again; event
        # ids make a second copy harmless.
        conn.execute("UPDATE ingest_journal SET sent_at = NULL WHERE sent_at IS NOT NULL")
        row = conn.execute("SELECT event_time_ms FROM clock_state WHERE id = 1").fetchone()
        if row:
            clock.observe(int(row[0]))
        _move_key_out_of_database(conn, settings)
    return open_keyring(settings)


def _move_key_out_of_database(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """Earlier versions kept a generated key in the database it protects; it moves to the key file."""
    row = conn.execute("SELECT value FROM pipeline_secrets WHERE name = 'hash_key'").fetchone()
    if row is None:
        return
    path = key_file(settings)
    if settings.hash_key is None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(bytes(row[0]).hex() + "\n")
        log.info("hash key moved from the database to %s", path)
    conn.execute("DELETE FROM pipeline_secrets WHERE name = 'hash_key'")


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
    app, settings = pipeline.app, pipeline.settings
    db = Database(settings.postgres_dsn or "")

    registry_down = pipeline.metrics.registry_errors.labels("erasure-acks")

    async def acks(stream: Any) -> None:
        async for events in stream.take_events(ACKS_BATCH, within=ACKS_WITHIN_S):
            await _handle_acks(pipeline, db, registry_down, [event.message for event in events])

    acks.__name__ = acks.__qualname__ = "erasure_acks"
    app.agent(_raw_topic(app, settings.topic("erasure-acks")), name="erasure-acks")(acks)


def _register_background(pipeline: Pipeline) -> None:
    """The clock-driven ticks of every processor and the outbox relay."""
    app = pipeline.app
    tick_db = Database(pipeline.settings.postgres_dsn or "")
    settings, ctx = pipeline.settings, pipeline.context
    processors = all_processors()

    def oversize_letter(topic: str, key: bytes | None, size: int) -> tuple[str, bytes | None, bytes, list[Any]]:
        rejected = Rejected("record_too_large", "RecordTooLarge",
                            f"an output record of {size} bytes is over the producer's limit; not published",
                            stage="outbox")
        letter_key, value, headers = dead_letter(pipeline.codec, rejected, Origin(topic, -1, -1, None, key), None,
                                                 pipeline.clock.now_ms())
        return settings.topic("dead-letters"), letter_key, value, headers

    relay_loop = Relay(settings, Database(settings.postgres_dsn or ""), ctx.keys, pipeline.clock, pipeline.metrics,
                       oversize_letter)
    journal = JournalRelay(Database(settings.postgres_dsn or ""))
    rebuild_db = Database(settings.postgres_dsn or "")

    @app.task
    async def journal_relay() -> None:
        await _relay_forever("ingest journal relay", lambda: journal.once(app.producer), JOURNAL_IDLE_S)

    @app.task
    async def rebuild() -> None:
        while True:
            await pipeline.rebuild_wanted.wait()
            pipeline.rebuild_wanted.clear()
            try:
                await republish_state(rebuild_db, ctx)
                await tombstone_erased(rebuild_db, ctx)
            except Exception as exc:  # tried again at the next reset; the state stays in PostgreSQL
                log.warning("state topics not republished: %s", describe(exc))

    letter_period = [""]  # the dead-letter key period last rotated (streams/sealing.py)

    @app.timer(interval=TICK_INTERVAL_S)
    async def tick() -> None:
        now = pipeline.clock.now_ms()
        for processor in processors:
            try:
                await tick_db.run(f"tick {processor.topic}",
                                  functools.partial(_tick_one, processor=processor, now=now, ctx=pipeline.context))
            except Exception as exc:  # the next tick tries again; never kill the timer
                log.warning("tick of %s failed: %s", processor.topic, describe(exc))
        try:
            await tick_db.run("erasure tick", lambda conn: erasure_tick(conn, pipeline.context, now))
        except Exception as exc:
            log.warning("erasure tick failed: %s", describe(exc))
        try:
            await tick_db.run("access tick", lambda conn: access_tick(conn, pipeline.context, now))
        except Exception as exc:
            log.warning("access tick failed: %s", describe(exc))
        try:
            await tick_db.run("retention tick",
                              lambda conn: retention_tick(conn, pipeline.context, pipeline.context.policy, now))
        except Exception as exc:
            log.warning("retention tick failed: %s", describe(exc))
        period = period_subject(ctx.policy, now)
        if period != letter_period[0]:
            try:
                await tick_db.run("dead-letter keys", lambda conn: destroy_past_letter_keys(
                    conn, ctx.data_keys, ctx.policy, now))
                letter_period[0] = period
            except Exception as exc:
                log.warning("dead-letter keys not rotated: %s", describe(exc))

    @app.task
    async def relay() -> None:
        await _relay_forever("outbox relay", lambda: relay_loop.once(app.producer), RELAY_IDLE_S)


async def _relay_forever(what: str, once: Callable[[], Awaitable[int]], idle_s: float) -> None:
    """Run relay rounds back to back while they find work; pause ``idle_s`` when one finds none
    or fails (the next round tries again: a relay task never dies)."""
    while True:
        try:
            sent = await once()
        except Exception as exc:
            log.warning("%s failed: %s", what, describe(exc))
            sent = 0
        if sent == 0:
            await asyncio.sleep(idle_s)


def _register_lag(pipeline: Pipeline, groups: dict[str, list[str]]) -> None:
    probe = LagProbe(pipeline.settings, groups, pipeline.metrics)

    @pipeline.app.timer(interval=LAG_INTERVAL_S)
    async def consumer_lag() -> None:
        await asyncio.to_thread(probe.measure)

    @pipeline.app.on_before_shutdown.connect  # type: ignore[arg-type]  # see _ready in build_app
    async def _close_probe(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        probe.close()


async def send_dead_letter(pipeline: Pipeline, origin: Origin, original: bytes | None, rejected: Rejected) -> Any:
    """Queue the dead letter of a consumed record; returns the delivery future to await before
    the record's batch is acknowledged."""
    now = pipeline.clock.now_ms()
    ctx = pipeline.context
    key, sealed, sealed_for = await seal_letter(pipeline.keys_db, ctx.data_keys, ctx.policy, now, origin.key,
                                                capped(original))
    key, value, headers = dead_letter(pipeline.codec, rejected, dataclasses.replace(origin, key=key), sealed, now,
                                      original_size=len(original) if original is not None else 0,
                                      sealed_for=sealed_for)
    log.warning("dead-lettered %s[%d]@%d: %s", origin.topic, origin.partition, origin.offset, rejected.reason)
    return await pipeline.dead_letters.send(key=key, value=value, headers=headers)


async def _handle_acks(pipeline: Pipeline, db: Database, registry_down: Any, messages: list[Any]) -> None:
    """One batch from `erasure-acks`: decode (a registry outage is waited out), dead-letter what is
    undecodable or out of range, apply the rest; an ack that fails alone is isolated."""
    decoded = await with_retry("decode acks", lambda: _decode_acks(pipeline.codec, messages),
                               on_retry=lambda exc: registry_down.inc())
    good: list[tuple[Any, dict[str, Any]]] = []
    sweeps: list[dict[str, Any]] = []
    answers: list[tuple[Any, dict[str, Any]]] = []
    pending: list[Any] = []

    async def reject(msg: Any, rejected: Rejected) -> None:
        origin = Origin(msg.topic, msg.partition, msg.offset, _ts_ms(msg), msg.key)
        pending.append(await send_dead_letter(pipeline, origin, msg.value, rejected))
        pipeline.metrics.events_rejected.labels("erasure-acks", rejected.reason).inc()

    for msg, outcome in zip(messages, decoded, strict=True):
        if isinstance(outcome, Rejected):
            await reject(msg, outcome)
        elif (forged := await pipeline.ack_keys.problem(outcome.value["store"], msg.value, msg.headers)) is not None:
            await reject(msg, Rejected(forged[0], "ForgedAck", forged[1], stage="erasure-acks"))
        elif outcome.record.short_name == "RetentionAck":
            sweeps.append(outcome.value)
        elif outcome.record.short_name == "AccessAnswer":
            if (problem := answer_problem(outcome.value)) is not None:
                await reject(msg, Rejected("invalid_ack", "InvalidAck", problem, stage="erasure-acks"))
            else:
                answers.append((msg, outcome.value))
        elif (problem := ack_problem(outcome.value)) is not None:
            await reject(msg, Rejected("invalid_ack", "InvalidAck", problem, stage="erasure-acks"))
        else:
            good.append((msg, outcome.value))
    async def isolating(what: str, apply: Callable[[Any, list[dict[str, Any]]], Awaitable[Any]],
                        items: list[tuple[Any, dict[str, Any]]]) -> None:
        """Apply the batch; when it fails (not transiently), item by item, dead-lettering the one that fails."""
        try:
            await db.run(what, lambda conn: apply(conn, [a for _, a in items]))
        except Exception as exc:
            log.warning("%s: batch failed with %s; applying one by one", what, describe(exc))
            for msg, item in items:
                try:
                    await db.run(what, functools.partial(apply_one, apply=apply, item=item))
                except Exception as single:
                    await reject(msg, Rejected("processing_failed", type(single).__name__,
                                               f"{describe(single)} while applying", stage="erasure-acks"))

    async def apply_one(conn: Any, *, apply: Any, item: dict[str, Any]) -> Any:
        return await apply(conn, [item])

    if good:
        await isolating("erasure acks", lambda conn, acks: apply_acks(conn, pipeline.context, acks), good)
    if sweeps:
        await db.run("retention acks", lambda conn: apply_retention_acks(conn, pipeline.context, sweeps))
    if answers:
        await isolating("access answers", lambda conn, items: apply_answers(conn, pipeline.context, items), answers)
    for fut in pending:
        await fut


async def _tick_one(conn: psycopg.AsyncConnection[Any], *, processor: Any, now: int, ctx: Context) -> None:
    await processor.tick(conn, now, ctx)


async def _decode_acks(codec: Codec, messages: list[Any]) -> list[Any]:
    """Each message decoded, or its Rejected; a RegistryError (transient) propagates."""
    out: list[Any] = []
    for msg in messages:
        try:
            out.append(codec.decode(msg.value, topic="erasure-acks"))
        except DecodeError as exc:
            out.append(Rejected(exc.reason, type(exc).__name__, str(exc), stage="erasure-acks"))
    return out


def _ts_ms(msg: Any) -> int | None:
    ts = getattr(msg, "timestamp", None)
    return int(ts * 1000) if ts else None
