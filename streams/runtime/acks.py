"""The stores' answers on `erasure-acks` (erasure and verify acks, retention acks, access answers),
read by the worker's own short-wait consumer and applied a batch at a time, each kind by the feature
that takes it (an ``AnswerKind``, streams/runtime/feature.py).

A closure's proof waits on these: read through a Faust agent they waited for Faust's fixed
1.5 s fetch and its batching window, most of the time from closure to proof (issue 15). Here the
fetch waits ``LIFECYCLE_FETCH_WAIT_MS`` at most (Kafka answers it when records arrive; the
embedded broker within half of it), and each batch is applied as it comes.

Delivery: Kafka offsets are committed once a batch is applied; after a crash the batch is read
again and applying it again changes nothing (an ack is recorded once per store and round,
streams/erasure/answers.py). A batch that fails as a whole (the database gone past its retries) is read
again from its first offsets after a pause: nothing is skipped."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import psycopg

from lifecycle.core.consume import Batch, Commit, ConsumeLoop
from lifecycle.core.crypto import KeyWrapper
from lifecycle.core.storekeys import (
    RECEIPT_HEADER,
    StoreKey,
    ack_signature_problem,
    load_store_keys,
    receipt_problem,
    receipt_statement,
)
from lifecycle.schemas.codec import Codec
from lifecycle.schemas.errors import DecodeError
from lifecycle.streams.runtime.consumers import worker_consumer
from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.database import Database, describe, with_retry
from lifecycle.streams.runtime.deadletters import SendDeadLetter
from lifecycle.streams.runtime.decoding import Origin, Rejected
from lifecycle.streams.runtime.feature import AnswerKind
from lifecycle.streams.runtime.health import Health

__all__ = ["AckKeys", "AcksLoop", "ACKS_BATCH"]

log = logging.getLogger("lifecycle.acks")

ACKS_BATCH = 5000  # records per poll: a burst of closures answered by four stores arrives together
POLL_TIMEOUT_MS = 500


class AckKeys:
    """The stores' public keys (and legacy HMAC keys, docs/security.md), read at start and read
    again, at most once per batch, before an ack is refused for a signature they do not explain (a
    store registered or rotated since: a connector registers its key at its first start) or believed
    under a legacy HMAC key (refused once the store has a signing key). At most one query per batch,
    whatever an attacker writes. The pipeline creates no store key: it could sign with it."""

    def __init__(self, dsn: str, wrapper: KeyWrapper):
        self.dsn, self.wrapper = dsn, wrapper
        self.keys = self._load()
        self._fresh = True

    def _load(self) -> dict[str, StoreKey]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            return load_store_keys(conn, self.wrapper)

    async def problem(self, store: str, value: bytes, headers: Any) -> tuple[str, str] | None:
        headers = _header_list(headers)
        known = self.keys.get(store)
        if known is not None and known.public is None and not self._fresh:
            await self._reload()
        problem = ack_signature_problem(self.keys, store, value, headers)
        if problem is not None and problem[0] == "bad_signature" and not self._fresh:
            await self._reload()
            problem = ack_signature_problem(self.keys, store, value, headers)
        return problem

    async def _reload(self) -> None:
        self.keys = await asyncio.to_thread(self._load)
        self._fresh = True

    def new_batch(self) -> None:
        """The keys may be read again once in this batch."""
        self._fresh = False


class AcksLoop:
    """One per worker process; ``run`` is the task (started with the app)."""

    def __init__(self, context: PipelineContext, health: Health, ack_keys: AckKeys, send_dead_letter: SendDeadLetter,
                 producer_started: Callable[[], bool], kinds: Sequence[AnswerKind]):
        self.context, self.health, self.ack_keys = context, health, ack_keys
        self.kinds = {kind.record: kind for kind in kinds}
        self.send_dead_letter, self.producer_started = send_dead_letter, producer_started
        settings = context.settings
        self.topic = settings.topic("erasure-acks")
        self.group = f"{settings.app_id}-acks"  # the group the Faust agent read them as before
        self.db = Database(settings.postgres_dsn or "")
        # Kafka's commit is the truth here; a batch that fails as a whole is read again after a
        # pause, and a failed commit only means the next owner applies it again (harmless).
        self.loop = ConsumeLoop("acks", self._handle_batch, max_records=ACKS_BATCH, poll_timeout_ms=POLL_TIMEOUT_MS,
                                commit=Commit(advisory=True), retry_failed=True)
        self._registry_down = context.metrics.registry_errors.labels("erasure-acks")
        self._rejected: dict[str, Any] = {}

    async def run(self) -> None:
        s = self.context.settings
        consumer = worker_consumer(s, self.group, f"{self.group}-loop", ACKS_BATCH, s.fetch_wait_ms)
        consumer.subscribe([self.topic], listener=self.loop.listener(self._assigned, exclusive=False))
        await consumer.start()
        try:
            while not self.producer_started():  # dead letters go through the app's producer
                await asyncio.sleep(0.05)
            await self.loop.run(consumer)
        finally:
            await consumer.stop()

    async def _handle_batch(self, batch: Batch) -> None:
        await self.handle([m for records in batch.values() for m in records])

    async def _assigned(self, assigned: list[Any]) -> None:
        self.health.consumer_assigned("acks", True)
        log.info("acks assigned %d partitions", len(assigned))

    async def handle(self, messages: list[Any]) -> None:
        """One batch: decode (a registry outage is waited out), dead-letter what is undecodable,
        unsigned or out of range, apply the rest; an ack that fails alone is isolated."""
        ctx = self.context
        self.ack_keys.new_batch()
        decoded = await with_retry("decode acks", lambda: _decode(ctx.codec, messages),
                                   on_retry=lambda exc: self._registry_down.inc())
        accepted: dict[str, list[tuple[Any, dict[str, Any]]]] = {record: [] for record in self.kinds}
        pending: list[Any] = []

        async def reject(msg: Any, rejected: Rejected) -> None:
            origin = Origin(msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key)
            pending.append(await self.send_dead_letter(origin, msg.value, rejected))
            counter = self._rejected.get(rejected.reason)
            if counter is None:
                counter = self._rejected[rejected.reason] = ctx.metrics.events_rejected.labels(
                    "erasure-acks", rejected.reason)
            counter.inc()

        for msg, outcome in zip(messages, decoded, strict=True):
            if isinstance(outcome, Rejected):
                await reject(msg, outcome)
            elif (kind := self.kinds.get(outcome.record.short_name)) is None:
                await reject(msg, Rejected("unexpected_record", "UnexpectedRecord",
                                           f"record: {outcome.record.short_name} is not an answer this worker takes",
                                           stage="erasure-acks"))
            elif (forged := await self.ack_keys.problem(outcome.value["store"], msg.value, msg.headers)) is not None:
                await reject(msg, Rejected(forged[0], "ForgedAck", forged[1], stage="erasure-acks"))
            elif not ctx.signer.nonce_matches(outcome.value.get("nonce"), *kind.order(outcome.value)):
                await reject(msg, Rejected("unbound_ack", "UnboundAck", "nonce: not the nonce of the order it names "
                                           "(another order, round or request, or a replay)", stage="erasure-acks"))
            elif kind.receipt and \
                    (bad := receipt_problem(self.ack_keys.keys, outcome.value, _header_list(msg.headers))) is not None:
                await reject(msg, Rejected(bad[0], "ForgedAck", bad[1], stage="erasure-acks"))
            elif (problem := kind.problem(outcome.value)) is not None:
                await reject(msg, Rejected("invalid_ack", "InvalidAck", problem, stage="erasure-acks"))
            else:
                value = _with_receipt(outcome.value, msg.headers) if kind.receipt else outcome.value
                accepted[kind.record].append((msg, value))

        async def isolating(what: str, apply: Callable[[Any, list[dict[str, Any]]], Awaitable[Any]],
                            items: list[tuple[Any, dict[str, Any]]]) -> None:
            """Apply the batch; when it fails (not transiently), item by item, dead-lettering the one that fails."""
            try:
                await self.db.run(what, lambda conn: apply(conn, [a for _, a in items]))
            except Exception as exc:
                log.warning("%s: batch failed with %s; applying one by one", what, describe(exc))
                for msg, item in items:
                    try:
                        await self.db.run(what, functools.partial(_apply_one, apply=apply, item=item))
                    except Exception as single:
                        await reject(msg, Rejected("processing_failed", type(single).__name__,
                                                   f"{describe(single)} while applying", stage="erasure-acks"))

        for kind in self.kinds.values():  # in the order the features listed them
            if accepted[kind.record]:
                await isolating(kind.what, functools.partial(_apply_kind, kind=kind, ctx=ctx), accepted[kind.record])
        for fut in pending:
            await fut


def _header_list(headers: Any) -> list[tuple[str, bytes]]:
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())


def _with_receipt(ack: dict[str, Any], headers: Any) -> dict[str, Any]:
    """The ack with the store's signed receipt (statement, signature) attached, for the certificate."""
    signature = next((v for k, v in _header_list(headers) if k == RECEIPT_HEADER), None)
    if signature is None:
        return ack
    return {**ack, "receipt": (receipt_statement(ack).decode(), signature.decode("ascii", "replace"))}


async def _apply_kind(conn: Any, items: list[dict[str, Any]], *, kind: AnswerKind, ctx: PipelineContext) -> Any:
    return await kind.apply(conn, ctx, items)


async def _apply_one(conn: Any, *, apply: Any, item: dict[str, Any]) -> Any:
    return await apply(conn, [item])


async def _decode(codec: Codec, messages: list[Any]) -> list[Any]:
    """Each message decoded, or its Rejected; a RegistryError (transient) propagates."""
    out: list[Any] = []
    for msg in messages:
        try:
            out.append(codec.decode(msg.value, topic="erasure-acks"))
        except DecodeError as exc:
            out.append(Rejected(exc.reason, type(exc).__name__, str(exc), stage="erasure-acks"))
    return out

