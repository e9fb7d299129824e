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

A log that is new or shorter than the stored position is detected and started again
(streams/ingest/positions.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from lifecycle.core.clock import latest_plausible
from lifecycle.core.config import Settings
from lifecycle.core.consume import Batch, Commit, ConsumeLoop
from lifecycle.core.crypto import Forged
from lifecycle.streams.ingest.batch import apply_batch
from lifecycle.streams.ingest.dedupe import DedupeWindow, dedupe_window_ms
from lifecycle.streams.ingest.journal import journal_forget
from lifecycle.streams.ingest.positions import STORE_SQL, StoredPositions, record_digest
from lifecycle.streams.runtime.consumers import worker_consumer
from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.database import Database, describe, with_retry
from lifecycle.streams.runtime.deadletters import SendDeadLetter
from lifecycle.streams.runtime.decoding import Origin, Rejected, triage
from lifecycle.streams.runtime.health import Health
from lifecycle.streams.runtime.processor import Processor
from lifecycle.streams.runtime.sealing import open_events

__all__ = ["IntakeLoop", "INTAKE_BATCH"]

log = logging.getLogger("lifecycle.intake")

INTAKE_BATCH = 4000  # records per poll, over every assigned partition
POLL_TIMEOUT_MS = 200
KAFKA_COMMIT_EVERY_S = 1.0
AHEAD_SLICE = 200  # records decoded ahead between two looks at the event loop

class IntakeLoop:
    """Consume, triage, apply, store offsets; one per worker process (``run`` is the task)."""

    def __init__(self, context: PipelineContext, health: Health, processors: dict[str, Processor],
                 send_dead_letter: SendDeadLetter, producer_started: Callable[[], bool]):
        self.context, self.health = context, health
        self.settings: Settings = context.settings
        self.producer_started = producer_started
        self.processors = processors  # by full topic name
        self.contract = {self.settings.topic(p.topic): p.topic for p in processors.values()}
        self.send_dead_letter = send_dead_letter
        self.db = Database(self.settings.postgres_dsn or "")
        self.group = self.settings.app_id
        self.consumer: AIOKafkaConsumer | None = None
        # PostgreSQL holds the truth about progress; Kafka's copy is for lag tools only.
        self.loop = ConsumeLoop("intake", self.process, max_records=INTAKE_BATCH, poll_timeout_ms=POLL_TIMEOUT_MS,
                                commit=Commit(every_s=KAFKA_COMMIT_EVERY_S, advisory=True),
                                prepare=self._check_positions, before_poll=self._note_generation,
                                ahead=self._decode_ahead)
        self._generation = 0
        # The batch decoded while the one before was applied, and its outcomes by (topic, partition,
        # offset); used for that batch object alone (after a log reset the same offsets hold others).
        self._ahead: tuple[Batch | None, dict[tuple[str, int, int], Any]] = (None, {})
        self.dedupe = DedupeWindow(dedupe_window_ms(context.policy))
        m = context.metrics
        self._ingested: dict[tuple[str, str], Any] = {}
        self._rejected: dict[tuple[str, str], Any] = {}
        self._dlq = {t: m.dead_letters_written.labels(t) for t in self.contract.values()}
        self._clear = {t: m.clear_personal_fields.labels(t) for t in self.contract.values()}
        self._dup = {t: m.events_duplicate.labels(t) for t in self.contract.values()}
        self._registry_down = m.registry_errors.labels("intake")
        self.positions = StoredPositions(self.db, self.group, list(processors), self.contract, health,
                                         self.loop.to_commit)

    async def run(self) -> None:
        self.consumer = worker_consumer(self.settings, self.group, f"{self.group}-intake", INTAKE_BATCH,
                                        self.settings.fetch_wait_ms)
        # Assignment under the batch lock: a batch fetched from Kafka's committed offset before the
        # seek would be applied, then read again from PostgreSQL's (a dead letter sent twice).
        self.consumer.subscribe(list(self.processors), listener=self.loop.listener(self.resume, exclusive=True))
        await self.consumer.start()
        try:
            while not self.producer_started():  # dead letters go through Faust's producer
                await asyncio.sleep(0.05)
            await self.loop.run(self.consumer)
        finally:
            await self.consumer.stop()

    async def _note_generation(self) -> None:
        self._generation = self.positions.generation

    async def _check_positions(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        """A batch fetched across a resume loses what it holds of the partitions sought; a newly
        assigned partition's stored position is checked against its log (streams/ingest/positions.py)."""
        dropped = self.positions.drop_before_seek(consumer, batch) \
            if self._generation != self.positions.generation else set()
        if self.positions.unverified:
            await self.positions.verify(consumer, batch, dropped)

    async def _decode_ahead(self, batch: Batch) -> None:
        """Decoded while the batch before commits (lifecycle/core/consume.py ``ahead``), a slice at a
        time so that the batch before resumes as soon as PostgreSQL answers it: what is valid is
        kept for ``_apply_topic``; a rejection is decided again there, at apply time, with the clock
        as it is then. A registry that fails here leaves the rest to be decoded there."""
        not_after = latest_plausible(self.settings, self.context.clock)
        codec, ahead = self.context.codec, {}
        try:
            for tp, records in batch.items():
                contract = self.contract[tp.topic]
                for start in range(0, len(records), AHEAD_SLICE):
                    for record in records[start:start + AHEAD_SLICE]:
                        outcome = triage(codec, contract, record.value, not_after)
                        if not isinstance(outcome, Rejected):
                            ahead[(tp.topic, tp.partition, record.offset)] = outcome
                    await asyncio.sleep(0)
        except Exception:  # decoded again, with its retries, when applied
            pass
        self._ahead = (batch, ahead)

    async def resume(self, assigned: list[TopicPartition]) -> None:
        assert self.consumer is not None
        await self.positions.resume(self.consumer, assigned)
        self.health.consumer_assigned("intake", True)
        log.info("intake assigned %d partitions", len(assigned))

    async def process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        # Taken before any await: the next batch's decoding may start then.
        (decoded_for, ahead), self._ahead = self._ahead, (None, {})
        if decoded_for is not batch:
            ahead = {}
        by_topic: dict[str, list[tuple[TopicPartition, list[Any]]]] = defaultdict(list)
        for tp, records in batch.items():
            if records:
                by_topic[tp.topic].append((tp, records))
        for topic, parts in by_topic.items():
            await self._apply_topic(topic, parts, ahead)

    async def _apply_topic(self, topic: str, parts: list[tuple[TopicPartition, list[Any]]],
                           ahead: dict[tuple[str, int, int], Any]) -> None:
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
            return [(record, triage(codec, contract, record.value, not_after) if found is None else found)
                    for tp, records in parts for record in records
                    for found in (ahead.get((tp.topic, tp.partition, record.offset)),)]

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
        offsets = [(tp.partition, records[-1].offset + 1, record_digest(records[-1].value)) for tp, records in parts]
        applied_ids = [str(v["event_id"]) for _, v in valid]

        async def store_offsets(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(STORE_SQL, (self.group, [topic] * len(offsets), [p for p, _, _ in offsets],
                                        [o for _, o, _ in offsets], [d for _, _, d in offsets]))
            await journal_forget(conn, applied_ids)

        await _all(pending)  # dead letters on the broker before the offsets move past them
        pending.clear()
        result = await apply_batch(self.db, processor, [v for _, v in valid], ctx, self.dedupe,
                                   in_same_transaction=store_offsets)
        for index, error in result.failed:
            await reject(valid[index][0], Rejected("processing_failed", type(error).__name__,
                                                   f"{describe(error)} while applying", stage="process"))
        if not result.same_transaction_committed:
            await _all(pending)
            await self.db.run("intake offsets", store_offsets)
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


async def _all(futures: list[Any]) -> None:
    for fut in futures:
        await fut
