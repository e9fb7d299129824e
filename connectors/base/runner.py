"""Running a store: its own consumer group's offsets on `tombstones` and `retention-orders`,
acknowledgements on `erasure-acks`.

One connector process per store reads every partition (manual assignment, offsets committed
under the store's group id, no group membership): a restarted connector resumes at once from
the committed offsets. With dynamic membership, the embedded broker was seen keeping a departed
member as the group's leader, so that a restarted connector never completed its join.

Order of effects, for every batch: the store erases and commits; the acknowledgements are
produced and confirmed by the broker (acks=all); only then are the offsets committed. A crash
anywhere in between redelivers the batch, and the sink's idempotence turns that into the same
acknowledgement again. A store that cannot be reached keeps its batch, retries with backoff, and
tells the orchestrator with a ``failed`` acknowledgement (at most once a minute).

An access order (from `access-orders`) changes nothing: the sink gathers what it holds about the
subjects (``Sink.export``) and the answer goes back in parts, each sealed to the order's key
(lifecycle/core/sealed_answers.py) and signed like any acknowledgement (docs/access.md).

A verify order (``action: verify``) deletes nothing: the sink looks again (``Sink.verify``) and
the answer says how many items are left. Orders that name their subjects by keyed hashes alone
(a completed erasure checked again) are matched against the ids the store holds first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from lifecycle.connectors.base.metrics import ConnectorMetrics
from lifecycle.connectors.base.resolver import Resolver
from lifecycle.connectors.base.signing import SigningProducer, store_key
from lifecycle.connectors.base.sink import (
    AccessOrder,
    AckStatus,
    ErasureOrder,
    Expiry,
    InvalidOrder,
    Outcome,
    RetentionOrder,
    RetentionSink,
    Sink,
    TransientStoreError,
)
from lifecycle.core.backoff import Backoff
from lifecycle.core.config import Settings
from lifecycle.core.consume import Batch, Commit, ConsumeLoop
from lifecycle.core.orderkeys import load_order_verifier
from lifecycle.core.sealed_answers import BoxError, part_aad, seal_to
from lifecycle.schemas.codec import Codec
from lifecycle.schemas.deadletters import Origin, Rejected, dead_letter
from lifecycle.schemas.errors import DecodeError
from lifecycle.schemas.registry import make_registry

__all__ = ["run_connector", "group_id", "categories_of"]

log = logging.getLogger("lifecycle.connector")
_T = TypeVar("_T")
BATCH = 2000  # orders per poll: a burst of closures costs one transaction and one flush per batch
FAILED_ACK_EVERY_S = 60.0
PART_BYTES = 512 * 1024  # of an access answer, before sealing: a part stays far under the broker's 1 MB
TICK_S = 2.0
# Fault injection (tests only): SIGKILL the connector after its deletes committed and before the
# ack, once per request (a marker file per request in this folder remembers it happened).
FAULT_DIR = os.environ.get("LIFECYCLE_FAULT_AFTER_ERASE_DIR")


def group_id(settings: Settings, store: str) -> str:
    return f"{settings.topic_prefix}store-{store}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run_connector(settings: Settings, sink: Sink, stop: threading.Event | None = None,
                  metrics: ConnectorMetrics | None = None) -> None:
    """Run the store until ``stop`` is set (the caller's signal handlers set it)."""
    asyncio.run(_Connector(settings, sink, stop or threading.Event(), metrics).run())


@dataclasses.dataclass
class _Orders:
    """One batch's orders by kind, and the dead letters it caused."""

    erasures: dict[str, ErasureOrder] = dataclasses.field(default_factory=dict)
    verifies: dict[str, ErasureOrder] = dataclasses.field(default_factory=dict)
    sweeps: dict[str, RetentionOrder] = dataclasses.field(default_factory=dict)
    accesses: dict[str, AccessOrder] = dataclasses.field(default_factory=dict)
    letters: list[Any] = dataclasses.field(default_factory=list)


class _Connector:
    """One store's loop. aiokafka, not kafka-python: an idle connector polls the broker about ten
    times a second, and kafka-python's consumer and producer threads cost about three times
    aiokafka's CPU for it (docs/performance.md). The store's own calls (blocking: psycopg, redis,
    the file system) run on one thread of their own, so that the next batch is fetched meanwhile."""

    def __init__(self, settings: Settings, sink: Sink, stop: threading.Event, metrics: ConnectorMetrics | None):
        self.settings, self.sink, self.stop = settings, sink, stop
        self.metrics = metrics or ConnectorMetrics.create(sink.name, categories_of(sink))
        self.codec = Codec(make_registry(settings.schema_registry_url), topic_prefix=settings.topic_prefix)
        self.store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-{sink.name}")
        self.resolver = Resolver(sink, settings)
        self.verifier = load_order_verifier(settings)  # before anything: no key, no connector
        self.last_failed_ack = self.last_tick = 0.0
        self.producer: SigningProducer
        self.sweeper: _Sweeper

    async def in_store(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self.store_thread, fn)

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s, name = self.settings, self.sink.name
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap, group_id=group_id(s, name), enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=BATCH, fetch_max_wait_ms=s.fetch_wait_ms,
            client_id=f"lifecycle-store-{name}", **s.aiokafka_kwargs())
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=2,
                                    client_id=f"lifecycle-store-{name}", **s.aiokafka_kwargs())
        started: list[Any] = []
        try:
            await consumer.start()
            started.append(consumer)
            await producer.start()
            started.append(producer)
            partitions = await _all_partitions(s, [s.topic("tombstones"), s.topic("retention-orders"),
                                               s.topic("access-orders")], self.stop)
            consumer.assign(partitions)
            signer = SigningProducer(producer, store_key(s, name))
            await self.loop(consumer, signer)
        finally:
            for client in reversed(started):
                await client.stop()
            self.store_thread.submit(self.sink.close).result()
            self.store_thread.shutdown()

    async def loop(self, consumer: Any, producer: SigningProducer) -> None:
        """The shared consume loop (lifecycle/core/consume.py) with this store's parameters: the
        Kafka commit is the truth (after every batch, once its acks are on the broker), periodic
        work before each poll, and a stop between batches."""
        self.producer, self.sweeper = producer, _Sweeper(self, producer)
        last_poll = self.metrics.last_poll.labels(self.sink.name)
        loop = ConsumeLoop(f"store {self.sink.name}", self.handle, max_records=BATCH, poll_timeout_ms=200,
                           commit=Commit(), stopped=self.stop.is_set, before_poll=self.tick,
                           after_poll=lambda _: last_poll.set_to_current_time())
        await loop.run(consumer)

    async def tick(self) -> None:
        if time.monotonic() - self.last_tick > TICK_S:
            self.last_tick = time.monotonic()
            try:
                await self.in_store(self.sink.tick)
            except TransientStoreError:
                log.warning("store %s unavailable for its periodic work; will retry", self.sink.name)

    async def handle(self, batch: Batch) -> bool:
        """Every order of the batch, each kind in one call to the store; False if stopped before the end."""
        producer, found = self.producer, _Orders()
        for records in batch.values():
            for msg in records:
                await self.sort(msg, found)
        # Verify orders first: that is log order for any request in both. A verify order of
        # round k follows this store's ack of round k; an erase order of round k + 1 follows a
        # finding of round k. Erasing first would answer the older verify order "nothing found"
        # about data the store did hold (seen once the next batch was fetched during the erase).
        if found.verifies and not await self.verify(producer, list(found.verifies.values())):
            return False
        if found.erasures and not await self.erase(producer, list(found.erasures.values())):
            return False
        if not await self.sweeper.run(list(found.sweeps.values())):
            return False
        if found.accesses and not await self.answer_access(producer, list(found.accesses.values())):
            return False
        await _confirmed(producer, found.letters)
        return True

    async def sort(self, msg: Any, found: _Orders) -> None:
        """One record into its kind of order (the latest of a request or category counts), or a dead
        letter. Nothing is acted upon before its signature verified (docs/security.md)."""
        s, producer = self.settings, self.producer
        contract = "retention-orders" if msg.topic == s.topic("retention-orders") else \
            "access-orders" if msg.topic == s.topic("access-orders") else "tombstones"
        if (forged := self.verifier.problem(msg.value, msg.headers)) is not None:
            found.letters.append(await self.reject(producer, msg, Rejected(forged[0], "ForgedOrder", forged[1])))
            return
        try:
            value = self.codec.decode(msg.value, topic=contract).value
            if contract == "access-orders":
                access = AccessOrder.from_record(value)
                found.accesses[access.request_id] = access
            elif contract == "retention-orders":
                sweep = RetentionOrder.from_record(value)
                found.sweeps[sweep.category] = sweep
            else:
                order = ErasureOrder.from_record(value)
                pending = found.verifies if order.action == "verify" else found.erasures
                if order.request_id not in pending or pending[order.request_id].round < order.round:
                    pending[order.request_id] = order
        except DecodeError as exc:
            found.letters.append(await self.reject(producer, msg, Rejected(
                "unreadable_order", type(exc).__name__, f"{exc.reason}: {exc}")))
        except InvalidOrder as exc:
            found.letters.append(await self.reject(producer, msg, Rejected("invalid_order", "InvalidOrder", str(exc))))

    async def reject(self, producer: SigningProducer, msg: Any, rejected: Rejected) -> Any:
        """Dead-letter an order not acted upon, with its reason and origin. Neither its key nor its
        bytes are copied (they may name a person; the original stays at its origin)."""
        self.metrics.rejected.labels(self.sink.name, rejected.reason).inc()
        log.warning("store %s refused the order at %s[%d]@%d: %s", self.sink.name, msg.topic, msg.partition,
                    msg.offset, rejected.reason)
        rejected = dataclasses.replace(rejected, stage=f"store-{self.sink.name}")
        key, value, headers = dead_letter(self.codec, rejected, Origin(msg.topic, msg.partition, msg.offset,
                                                                       msg.timestamp, None), None, _now_ms())
        return await producer.send(self.settings.topic("dead-letters"), key=key, value=value, extra=headers)

    async def erase(self, producer: SigningProducer, orders: list[ErasureOrder]) -> bool:
        """Erase, then acknowledge once the deletes committed; False if stopped first."""
        backoff = Backoff(first_s=0.2, max_s=10.0)
        unavailable = self.metrics.unavailable.labels(self.sink.name)
        while not self.stop.is_set():
            try:
                outcomes = await self.in_store(lambda: self.one_by_one(
                    self.resolver.erase, orders, _failed_outcome))
                break
            except TransientStoreError as exc:
                unavailable.inc()
                error = type(exc.__cause__ or exc).__name__
                log.warning("store %s unavailable (%s); retrying", self.sink.name, error)
                if time.monotonic() - self.last_failed_ack > FAILED_ACK_EVERY_S:
                    await _ack(producer, self.codec, self.settings, self.sink.name, orders,
                               {o.request_id: Outcome(AckStatus.FAILED, 0, error) for o in orders})
                    self.last_failed_ack = time.monotonic()
                await _pause(self.stop, backoff.next_delay())
        else:
            return False
        if FAULT_DIR and outcomes:
            _maybe_die(FAULT_DIR, outcomes)
        await _ack(producer, self.codec, self.settings, self.sink.name, orders, outcomes)
        for outcome in outcomes.values():
            self.metrics.orders.labels(self.sink.name, outcome.status).inc()
        return True

    async def verify(self, producer: SigningProducer, orders: list[ErasureOrder]) -> bool:
        """Answer verify orders (docs/erasure.md): nothing_found when the store holds nothing more,
        failed with items_found when it does. False if stopped before the answer."""
        looked = await self.retrying("to verify", lambda: self.one_by_one(self.resolver.verify, orders, lambda e: e))
        if looked is None:
            return False
        found = {rid: n for rid, n in looked.items() if isinstance(n, int)}
        outcomes = {rid: Outcome(AckStatus.FAILED, 0, n) if isinstance(n, str) else  # could not look: unchecked
                    Outcome(AckStatus.NOTHING_FOUND) if not n else
                    Outcome(AckStatus.FAILED, 0, f"{n} item(s) still held") for rid, n in looked.items()}
        await _ack(producer, self.codec, self.settings, self.sink.name, orders, outcomes, found)
        for rid, n in found.items():
            if n:
                log.warning("store %s still holds %d item(s) of erasure %s", self.sink.name, n, rid)
        return True

    def one_by_one(self, fn: Callable[[list[Any]], dict[str, Any]], orders: list[Any],
                   failed: Callable[[str], Any]) -> dict[str, Any]:
        """``fn(orders)`` on the store's thread; when it fails for a reason no retry mends (not
        TransientStoreError), each order alone, and an order that fails alone is answered
        ``failed(error)`` (the orchestrator asks again later) instead of crashing the connector on
        every restart. The error is named by its class alone: its message may quote data."""
        try:
            return fn(orders)
        except TransientStoreError:
            raise
        except Exception as exc:
            log.warning("store %s failed a batch of %d order(s) with %s; each alone", self.sink.name, len(orders),
                        type(exc).__name__)
        out: dict[str, Any] = {}
        for order in orders:
            try:
                out.update(fn([order]))
            except TransientStoreError:
                raise
            except Exception as exc:
                self.metrics.rejected.labels(self.sink.name, "store_error").inc()
                log.warning("store %s could not carry out order %s (%s); answered failed", self.sink.name,
                            order.request_id, type(exc).__name__)
                out[order.request_id] = failed(f"store error: {type(exc).__name__}")
        return out

    async def answer_access(self, producer: SigningProducer, orders: list[AccessOrder]) -> bool:
        """Answer access orders: what the store holds, in sealed parts. False if stopped first."""
        sink = self.sink
        exported = await self.retrying("for an access order", lambda: self.one_by_one(sink.export, orders, lambda e: e))
        if exported is None:
            return False
        futures = []
        for order in orders:
            found = exported.get(order.request_id)
            if isinstance(found, str):  # the store could not gather it: an answer that says so
                futures.append(await self._access_answer(producer, order, 0, {
                    "part": 0, "parts": 0, "sealed": b"", "error": found}))
                continue
            document = json.dumps({"store": sink.name, "holds": list(sink.holds), "items": found.items if found else 0,
                                   "data": found.data if found else {}}, sort_keys=True).encode()
            chunks = [document[i:i + PART_BYTES] for i in range(0, len(document), PART_BYTES)]
            answers: list[dict[str, Any]] = []
            try:
                for part, chunk in enumerate(chunks):
                    sealed = seal_to(order.answer_key, chunk, part_aad(order.request_id, sink.name, part, len(chunks)))
                    answers.append({"part": part, "parts": len(chunks), "sealed": sealed, "error": None})
            except BoxError as exc:
                answers = [{"part": 0, "parts": 0, "sealed": b"", "error": str(exc)}]
            for answer in answers:
                futures.append(await self._access_answer(producer, order, found.items if found else 0, answer))
        await _confirmed(producer, futures)
        log.info("store %s answered %d access order(s)", sink.name, len(orders))
        return True

    async def _access_answer(self, producer: SigningProducer, order: AccessOrder, items: int,
                             answer: dict[str, Any]) -> Any:
        value = self.codec.encode("AccessAnswer", {
            "request_id": order.request_id, "store": self.sink.name, "items": items, "completed_at": _now_ms(),
            "nonce": order.nonce, **answer})
        return await producer.send(self.settings.topic("erasure-acks"), key=order.request_id.encode(), value=value)

    async def retrying(self, what: str, fn: Callable[[], _T]) -> _T | None:
        """``fn()`` on the store's thread once the store answers (retried with backoff while it is
        unreachable); None if stopped first."""
        backoff = Backoff(first_s=0.2, max_s=10.0)
        while not self.stop.is_set():
            try:
                return await self.in_store(fn)
            except TransientStoreError as exc:
                log.warning("store %s unavailable %s (%s); retrying", self.sink.name, what,
                            type(exc.__cause__ or exc).__name__)
                await _pause(self.stop, backoff.next_delay())
        return None


async def _pause(stop: threading.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, less once ``stop`` is set (the loop keeps serving the clients)."""
    end = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < end:
        await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))


async def _confirmed(producer: SigningProducer, futures: list[Any]) -> None:
    """Every record on the broker (acks=all) before the offsets that produced them are committed."""
    await producer.flush()
    for fut in futures:
        await asyncio.wait_for(fut, timeout=30)


def categories_of(sink: Sink) -> tuple[str, ...]:
    """The categories a store sweeps by time (none for a store that only erases)."""
    return sink.retention_categories if isinstance(sink, RetentionSink) else ()


async def _all_partitions(settings: Settings, topics: list[str], stop: threading.Event) -> list[Any]:
    """Every partition of ``topics``: one connector per store reads them all, with its group's
    committed offsets and no group membership (see the module's docstring). Empty when asked to
    stop first: a connector told to stop while its broker is gone must not wait for it. Asked once
    at start with kafka-python, whose public API reads the partitions of a topic not subscribed to."""
    from aiokafka import TopicPartition
    from kafka import KafkaConsumer

    looker = await asyncio.to_thread(KafkaConsumer, bootstrap_servers=settings.kafka_bootstrap,
                                     client_id="lifecycle-store-metadata", **settings.kafka_client_kwargs())
    try:
        deadline = time.monotonic() + 60
        while not stop.is_set():
            found = {t: await asyncio.to_thread(looker.partitions_for_topic, t) for t in topics}
            if all(found.values()):
                return [TopicPartition(t, p) for t, parts in found.items() for p in sorted(parts)]
            if time.monotonic() > deadline:
                raise TransientStoreError(f"topics not found: {sorted(t for t, p in found.items() if not p)}")
            await _pause(stop, 0.5)
        return []
    finally:
        await asyncio.to_thread(looker.close)


class _Sweeper:
    """Retention orders for one store: the categories it holds are swept, each acknowledged
    with a RetentionAck; a store that cannot be reached keeps the order and retries."""

    def __init__(self, connector: _Connector, producer: SigningProducer):
        self.connector, self.producer = connector, producer
        self.sink, self.codec, self.settings = connector.sink, connector.codec, connector.settings
        self.categories = set(categories_of(self.sink))

    async def run(self, orders: list[RetentionOrder]) -> bool:
        """Sweep every order this store takes part in; False if stopped before the end."""
        futures = []
        unavailable = self.connector.metrics.unavailable.labels(self.sink.name)
        for order in orders:
            sink = self.sink
            if order.category not in self.categories or not isinstance(sink, RetentionSink):
                continue
            backoff, reported = Backoff(first_s=0.2, max_s=10.0), False
            while True:
                if self.connector.stop.is_set():
                    return False
                try:
                    expiry: Expiry | None = await self.connector.in_store(lambda: sink.expire(order))  # noqa: B023
                    break
                except TransientStoreError as exc:
                    unavailable.inc()
                    error = type(exc.__cause__ or exc).__name__
                    log.warning("store %s unavailable for a retention sweep (%s); retrying", sink.name, error)
                    if not reported:  # once per order: the orchestrator counts the failure
                        futures.append(await self._ack(order, 0, None, error))
                        reported = True
                    await _pause(self.connector.stop, backoff.next_delay())
                except Exception as exc:  # no retry mends it: said in the ack; the next order tries again
                    self.connector.metrics.rejected.labels(sink.name, "store_error").inc()
                    log.warning("store %s could not sweep %s (%s)", sink.name, order.category, type(exc).__name__)
                    futures.append(await self._ack(order, 0, None, f"store error: {type(exc).__name__}"))
                    expiry = None
                    break
            if expiry is None:
                continue
            log.info("store %s swept %s: %d item(s) erased", sink.name, order.category, expiry.items)
            futures.append(await self._ack(order, expiry.items, expiry.oldest_ms, None))
            self.connector.metrics.retention_items.labels(sink.name, order.category).inc(expiry.items)
        await _confirmed(self.producer, futures)
        return True

    async def _ack(self, order: RetentionOrder, items: int, oldest_ms: int | None, error: str | None) -> Any:
        value = self.codec.encode("RetentionAck", {
            "order_id": order.order_id, "store": self.sink.name, "category": order.category,
            "cutoff": order.cutoff_ms, "items_erased": items, "oldest_remaining": oldest_ms,
            "completed_at": _now_ms(), "error": error, "nonce": order.nonce,
        })
        return await self.producer.send(self.settings.topic("erasure-acks"), key=order.category.encode(), value=value)


def _maybe_die(folder: str, outcomes: dict[str, Outcome]) -> None:
    fresh = [rid for rid in outcomes if not os.path.exists(os.path.join(folder, rid))]
    if fresh:
        for rid in fresh:
            open(os.path.join(folder, rid), "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


async def _ack(producer: SigningProducer, codec: Codec, settings: Settings, store: str, orders: Any,
               outcomes: dict[str, Outcome], found: dict[str, int] | None = None) -> None:
    futures = []
    for order in orders:
        outcome = outcomes.get(order.request_id)
        if outcome is None:
            continue
        # An order by hash alone is answered by hash alone: the ids it matched stay in the store.
        account = None if order.by_hash_only else order.account_id
        record = {
            "request_id": order.request_id, "account_id": account, "store": store,
            "status": outcome.status, "items_erased": outcome.items, "completed_at": _now_ms(),
            "error": outcome.error, "action": order.action, "round": order.round,
            "items_found": (found or {}).get(order.request_id, 0), "nonce": order.nonce,
        }
        value = codec.encode("ErasureAck", record)
        key = (account or (order.subject_hashes[0] if order.subject_hashes else order.request_id)).encode()
        futures.append(await producer.send(settings.topic("erasure-acks"), key=key, value=value,
                                           extra=producer.key.receipt_headers(record)))
    await _confirmed(producer, futures)


def _failed_outcome(error: str) -> Outcome:
    return Outcome(AckStatus.FAILED, 0, error)
