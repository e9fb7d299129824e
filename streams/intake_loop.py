"""The intake loop: every input topic read in batches, each batch applied in one PostgreSQL
transaction together with the offsets it consumed.

Why not Faust agents here: a Faust worker SIGKILLed under load sometimes committed offsets past
events it had not applied (tests/faults: 2 runs in 6 of the 20-kill test), and Faust's
per-message machinery was 40% of the worker's CPU (docs/performance.md). So the hot path is a
plain aiokafka consumer (group `<prefix>worker`, group-managed assignment), and the truth about
how far each partition has been applied is the `intake_offsets` row written in the same
transaction as the batch's effects: on assignment every partition resumes from there, so a worker
killed at any instant neither skips an event nor applies one twice (event ids still dedupe what a
producer resent). Offsets are also committed to Kafka, after PostgreSQL and at most once a second,
only so that consumer lag can be read with the usual tools.

A batch's dead letters are on the broker before the transaction that moves its offsets commits.

A log that is new or shorter than the stored position (the embedded broker restarted: its log is
in memory; a topic recreated; a cluster restored from an older backup) is detected on the first
fetch after an assignment: the stored offset is past the partition's high-watermark (the fetch's,
which is right on every broker; Tansu's ListOffsets(latest) is not), or the first record fetched
is before it (a real Kafka resets an out-of-range position by itself). The partition then starts
again at the log's start, with event ids keeping the effect exactly-once; the reset is logged,
counted (`lifecycle_intake_log_resets_total`) and listed on `/readyz`; everything still in the
ingest journal is sent again, and the state topics are republished (streams/rebuild.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from lifecycle.core.clock import latest_plausible
from lifecycle.core.config import Settings
from lifecycle.core.crypto import Forged
from lifecycle.streams.consumers import worker_consumer
from lifecycle.streams.db import Database, describe, with_retry
from lifecycle.streams.health import Health
from lifecycle.streams.intake import Origin, Rejected, triage
from lifecycle.streams.journal import journal_forget, journal_resend_all
from lifecycle.streams.processing import apply_batch
from lifecycle.streams.processors import Context, Processor
from lifecycle.streams.sealing import open_events

# Queues the dead letter of a consumed record; returns what to await before its batch is acknowledged.
SendDeadLetter = Callable[[Origin, bytes | None, Rejected], Awaitable[Any]]

__all__ = ["IntakeLoop", "INTAKE_BATCH"]

log = logging.getLogger("lifecycle.intake")

INTAKE_BATCH = 4000  # records per poll, over every assigned partition
POLL_TIMEOUT_MS = 200
# Fault injection (tests only): seconds resume() waits between reading PostgreSQL's offsets and
# seeking to them, the window in which a fetch from Kafka's committed offset can arrive.
RESUME_DELAY_S = float(os.environ.get("LIFECYCLE_FAULT_RESUME_DELAY_S") or 0)
KAFKA_COMMIT_EVERY_S = 1.0

_LOAD = """
SELECT topic, partition, next_offset, last_digest FROM intake_offsets
WHERE consumer_group = %s AND topic = ANY(%s)
"""
# GREATEST: a worker that lost a partition mid-batch (a zombie) can never move it backwards; the
# digest follows the offset that wins.
_STORE = """
INSERT INTO intake_offsets (consumer_group, topic, partition, next_offset, last_digest)
SELECT %s, * FROM unnest(%b::text[], %b::int[], %b::bigint[], %b::bytea[])
ON CONFLICT (consumer_group, topic, partition)
DO UPDATE SET next_offset = GREATEST(intake_offsets.next_offset, EXCLUDED.next_offset),
              last_digest = CASE WHEN EXCLUDED.next_offset >= intake_offsets.next_offset
                                 THEN EXCLUDED.last_digest ELSE intake_offsets.last_digest END,
              updated_at = now()
"""


def _digest(value: bytes | None) -> bytes:
    """What identifies a record's content (16 bytes of SHA-256: collisions are not a concern)."""
    return hashlib.sha256(value or b"").digest()[:16]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, loop: IntakeLoop):
        self.intake = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Let the batch in hand finish, so the next owner starts after it.
        async with self.intake.busy:
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # Not while a batch is applied: one fetched from Kafka's committed offset before this seek
        # would be applied, then read again from PostgreSQL's (a dead letter sent twice).
        async with self.intake.busy:
            await self.intake.resume(list(assigned))


class IntakeLoop:
    """Consume, triage, apply, store offsets; one per worker process (``run`` is the task)."""

    def __init__(self, context: Context, health: Health, processors: dict[str, Processor],
                 send_dead_letter: SendDeadLetter, producer_started: Callable[[], bool]):
        self.context, self.health = context, health
        self.settings: Settings = context.settings
        self.producer_started = producer_started
        self.processors = processors  # by full topic name
        self.contract = {self.settings.topic(p.topic): p.topic for p in processors.values()}
        self.send_dead_letter = send_dead_letter
        self.db = Database(self.settings.postgres_dsn or "")
        self.group = self.settings.app_id
        self.busy = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self._to_kafka: dict[TopicPartition, int] = {}
        self._kafka_committed_at = 0.0
        m = context.metrics
        self._ingested: dict[tuple[str, str], Any] = {}
        self._rejected: dict[tuple[str, str], Any] = {}
        self._dlq = {t: m.dead_letters_written.labels(t) for t in self.contract.values()}
        self._clear = {t: m.clear_personal_fields.labels(t) for t in self.contract.values()}
        self._dup = {t: m.events_duplicate.labels(t) for t in self.contract.values()}
        self._registry_down = m.registry_errors.labels("intake")
        # Stored positions not yet checked against the log: (next offset, digest of the record before it).
        self._unverified: dict[TopicPartition, tuple[int, bytes | None]] = {}
        # Bumped by each resume, with where it sought each partition: a batch fetched across a
        # resume drops what it holds of those partitions (_drop_before_seek).
        self._generation = 0
        self._sought: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        self.consumer = worker_consumer(self.settings, self.group, f"{self.group}-intake", INTAKE_BATCH,
                                        self.settings.fetch_wait_ms)
        self.consumer.subscribe(list(self.processors), listener=_Listener(self))
        await self.consumer.start()
        try:
            while not self.producer_started():  # dead letters go through Faust's producer
                await asyncio.sleep(0.05)
            while True:
                generation = self._generation
                batch = await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=INTAKE_BATCH)
                async with self.busy:
                    dropped = self._drop_before_seek(batch) if generation != self._generation else set()
                    if self._unverified:
                        await self._verify(batch, dropped)
                    if batch:
                        await self.process(batch)
                await self._commit_to_kafka()
        finally:
            await self.consumer.stop()

    async def resume(self, assigned: list[TopicPartition]) -> None:
        """Seek every assigned partition to the offset PostgreSQL holds for it; a partition it has
        no row for starts from the group's Kafka commit, else the earliest record."""
        assert self.consumer is not None

        async def load(conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, int, int, bytes | None]]:
            cur = await conn.execute(_LOAD, (self.group, list(self.processors)))
            return [(str(t), int(p), int(o), bytes(d) if d is not None else None)
                    for t, p, o, d in await cur.fetchall()]

        stored = {(t, p): (o, d) for t, p, o, d in await self.db.run("intake offsets", load)}
        if RESUME_DELAY_S:
            await asyncio.sleep(RESUME_DELAY_S)
        self._generation += 1
        self._sought = {}
        for tp in assigned:
            position = stored.get((tp.topic, tp.partition))
            if position is not None:
                offset, digest = position
                # One record back when its digest is known: reading it again proves the log is the one
                # the offset was counted in (streams/intake_loop.py, _verify).
                self._sought[tp] = offset - 1 if digest is not None and offset > 0 else offset
                self.consumer.seek(tp, self._sought[tp])
                self._to_kafka[tp] = offset  # so that Kafka's copy (lag) catches up even when idle
                self._unverified[tp] = (offset, digest)
        self.health.consumer_assigned("intake", True)
        log.info("intake assigned %d partitions", len(assigned))

    def _drop_before_seek(self, batch: dict[TopicPartition, list[Any]]) -> set[TopicPartition]:
        """Partitions were sought while ``batch`` was fetched: what it holds of them may come from
        before the seek. Dropped, and read again from where the seek put them; returns them."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        dropped = set()
        for tp, position in self._sought.items():
            if batch.pop(tp, None) and tp in owned:
                self.consumer.seek(tp, position)
                dropped.add(tp)
        return dropped

    async def _verify(self, batch: dict[TopicPartition, list[Any]], later: set[TopicPartition]) -> None:
        """Compare each newly assigned partition's stored offset with its log, once fetched
        (``later``: partitions read again from their seek, checked with the next batch)."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        lost: list[tuple[TopicPartition, int, int]] = []
        for tp, (stored, digest) in list(self._unverified.items()):
            if tp not in owned:
                del self._unverified[tp]
                continue
            if tp in later:
                continue
            records = batch.get(tp)
            highwater = self.consumer.highwater(tp)
            back = stored - 1 if digest is not None and stored > 0 else stored  # where resume() sought
            if records:
                first = records[0].offset
                if first == back and back < stored:
                    if _digest(records[0].value) == digest:
                        del records[0]  # the last record applied: the same log, carry on after it
                    else:
                        lost.append((tp, stored, -1))  # a different record there: another log
                elif first < back:  # the client already reset an out-of-range position
                    lost.append((tp, stored, first))
                del self._unverified[tp]
            elif highwater is not None:
                if highwater < stored:
                    lost.append((tp, stored, highwater))
                del self._unverified[tp]
        if lost:
            await self._reset(lost)
            for tp, _, _ in lost:
                batch.pop(tp, None)  # read again from the log's start

    async def _reset(self, lost: list[tuple[TopicPartition, int, int]]) -> None:
        assert self.consumer is not None
        starts = await self.consumer.beginning_offsets([tp for tp, _, _ in lost])
        for tp, stored, log_end in lost:
            found = "another record before it" if log_end < 0 else f"log end {log_end}"
            log.warning("the log of %s[%d] is not the one the intake stood in (stored offset %d, %s): "
                        "starting again at %d", tp.topic, tp.partition, stored, found, starts[tp])
            self.health.note_log_reset(self.contract[tp.topic], tp.partition, stored, log_end)

        async def tx(conn: psycopg.AsyncConnection[Any]) -> int:
            await conn.execute(
                "UPDATE intake_offsets o SET next_offset = r.start, last_digest = NULL, updated_at = now() "
                "FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS r(topic, partition, start) "
                "WHERE o.consumer_group = %s AND o.topic = r.topic AND o.partition = r.partition",
                ([tp.topic for tp, _, _ in lost], [tp.partition for tp, _, _ in lost],
                 [starts[tp] for tp, _, _ in lost], self.group))
            return await journal_resend_all(conn)

        resent = await self.db.run("intake log reset", tx)
        for tp, _, _ in lost:
            self.consumer.seek(tp, starts[tp])
            self._to_kafka[tp] = starts[tp]
        log.warning("%d accepted events still in the ingest journal will be sent again", resent)

    async def process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        by_topic: dict[str, list[tuple[TopicPartition, list[Any]]]] = defaultdict(list)
        for tp, records in batch.items():
            if records:
                by_topic[tp.topic].append((tp, records))
        for topic, parts in by_topic.items():
            await self._apply_topic(topic, parts)

    async def _apply_topic(self, topic: str, parts: list[tuple[TopicPartition, list[Any]]]) -> None:
        ctx, contract = self.context, self.contract[topic]
        processor = self.processors[topic]
        not_after = latest_plausible(self.settings, ctx.clock)
        codec = ctx.codec
        pending: list[Any] = []
        rejects: dict[str, int] = {}
        valid: list[tuple[Any, dict[str, Any]]] = []

        async def reject(record: Any, outcome: Rejected) -> None:
            origin = Origin(record.topic, record.partition, record.offset, record.timestamp, record.key)
            pending.append(await self.send_dead_letter(origin, record.value, outcome))
            rejects[outcome.reason] = rejects.get(outcome.reason, 0) + 1

        async def decode_all() -> list[tuple[Any, Any]]:
            # Every record decoded before any dead letter is sent: a registry outage (transient)
            # retries the whole batch without sending a letter twice.
            return [(record, triage(codec, contract, record.value, not_after))
                    for _, records in parts for record in records]

        decoded = await with_retry(f"decode {contract}", decode_all, on_retry=lambda exc: self._registry_down.inc())
        opened, clear = await open_events(self.db, ctx.data_keys,
                                          [(o.record, o.value) for _, o in decoded if not isinstance(o, Rejected)])
        if clear:
            self._clear[contract].inc(clear)
        values = iter(opened)
        for record, outcome in decoded:
            if isinstance(outcome, Rejected):
                await reject(record, outcome)
            elif isinstance(value := next(values), Forged):
                await reject(record, Rejected("forged_ciphertext", "Forged", str(value)))
            else:
                valid.append((record, value))
        offsets = [(tp.partition, records[-1].offset + 1, _digest(records[-1].value)) for tp, records in parts]
        applied_ids = [str(v["event_id"]) for _, v in valid]

        async def store_offsets(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(_STORE, (self.group, [topic] * len(offsets), [p for p, _, _ in offsets],
                                        [o for _, o, _ in offsets], [d for _, _, d in offsets]))
            await journal_forget(conn, applied_ids)

        await _all(pending)  # dead letters on the broker before the offsets move past them
        pending.clear()
        result = await apply_batch(self.db, processor, [v for _, v in valid], ctx,
                                   also=store_offsets)
        for index, error in result.failed:
            await reject(valid[index][0], Rejected("processing_failed", type(error).__name__,
                                                   f"{describe(error)} while applying", stage="process"))
        if not result.also_committed:
            await _all(pending)
            await self.db.run("intake offsets", store_offsets)
        for tp, records in parts:
            self._to_kafka[tp] = records[-1].offset + 1
        self._count(contract, valid, result, rejects)

    def _count(self, contract: str, valid: list[tuple[Any, dict[str, Any]]], result: Any,
               rejects: dict[str, int]) -> None:
        metrics = self.context.metrics
        counts: dict[str, int] = {}
        failed = {index for index, _ in result.failed}
        for index, (_, value) in enumerate(valid):
            if index not in failed:
                counts[value["event_type"]] = counts.get(value["event_type"], 0) + 1
        for et, n in result.suppressed.items():
            counts[et] -= n
            metrics.events_suppressed.labels(contract, et).inc(n)
        for et, n in counts.items():
            if n > 0:
                child = self._ingested.get((contract, et))
                if child is None:
                    child = self._ingested[(contract, et)] = metrics.events_ingested.labels(contract, et)
                child.inc(n)
        for reason, n in rejects.items():
            child = self._rejected.get((contract, reason))
            if child is None:
                child = self._rejected[(contract, reason)] = metrics.events_rejected.labels(contract, reason)
            child.inc(n)
        self._dlq[contract].inc(sum(rejects.values()))
        self._dup[contract].inc(result.duplicates)

    async def _commit_to_kafka(self) -> None:
        if not self._to_kafka or time.monotonic() - self._kafka_committed_at < KAFKA_COMMIT_EVERY_S:
            return
        assert self.consumer is not None
        owned = self.consumer.assignment()
        offsets = {tp: o for tp, o in self._to_kafka.items() if tp in owned}
        self._to_kafka.clear()
        self._kafka_committed_at = time.monotonic()
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # PostgreSQL holds the truth; this copy is for lag only
            log.info("intake offsets not committed to Kafka (%s); PostgreSQL has them", type(exc).__name__)


async def _all(futures: list[Any]) -> None:
    for fut in futures:
        await fut
