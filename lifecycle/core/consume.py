"""The one consume loop: fetch a batch, hand it over, commit its offsets, keep rebalances out of a
batch in hand. The worker's intake and acks loops and every store's connector run on it; what
differs between them is a parameter (docs/architecture.md, "One consume loop"):

- where the truth about progress lives (``Commit``): the intake's is in PostgreSQL, written in the
  batch's own transaction, so its Kafka commit is a copy for lag tools, at most once a second and
  never an error; the acks loop's and a store's is the Kafka commit, after every batch;
- what a batch that fails as a whole does (``retry_failed``): the acks loop reads it again from
  its first offsets after a pause; the intake and a store raise (their handlers isolate a bad
  record themselves, and a store keeps its batch until the store answers);
- how partitions are owned: group-managed (``listener``) or assigned by the caller.

Decoding, isolating a bad record and applying in a transaction are the handler's: each loop's
records, checks and database differ."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from lifecycle.core.backoff import Backoff

__all__ = ["Batch", "BatchListener", "Commit", "ConsumeLoop"]

log = logging.getLogger("lifecycle.consume")

Batch = dict[TopicPartition, list[Any]]


@dataclass(frozen=True)
class Commit:
    """When a loop commits its offsets to Kafka, and what a failed commit means."""

    every_s: float = 0.0  # 0: after every batch
    advisory: bool = False  # True: the truth is elsewhere; a failed commit is logged, never raised


class BatchListener(ConsumerRebalanceListener):
    """A revocation waits for the batch in hand (applied and committed first, so the next owner
    starts after it). An assignment calls ``on_assigned``, under the same lock when ``exclusive``:
    a loop that seeks on assignment must not seek while a batch fetched before is being applied."""

    def __init__(self, busy: asyncio.Lock, on_assigned: Callable[[list[Any]], Awaitable[None]], exclusive: bool):
        self.busy, self.on_assigned, self.exclusive = busy, on_assigned, exclusive

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.busy:
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.exclusive:
            async with self.busy:
                await self.on_assigned(list(assigned))
        else:
            await self.on_assigned(list(assigned))


class ConsumeLoop:
    """``handle(batch)`` for every non-empty batch, under ``busy`` (rebalances wait for it); it
    returns False to stop the loop before the batch's offsets are committed. ``prepare(batch)``
    runs first under the same lock and may drop records (the intake's check of its stored
    positions); ``before_poll``/``after_poll`` are for periodic work and liveness. Offsets a
    caller moved outside a batch (a seek) go in ``to_commit``.

    ``ahead(batch)``, when given, makes the loop fetch the next batch while ``handle`` awaits its
    database, and runs on it there, outside the lock: work without effects (the intake decodes),
    so that the process computes while its database commits. Only ``prepare`` seeks, and it runs
    before the next fetch starts, so a batch fetched ahead comes from after every seek; a rebalance
    during the fetch is seen by ``prepare`` as it is without ``ahead``. Not with ``retry_failed``
    (its seek back would find a batch already fetched past it)."""

    def __init__(self, name: str, handle: Callable[[Batch], Awaitable[bool | None]], *, max_records: int,
                 poll_timeout_ms: int, commit: Commit, retry_failed: bool = False,
                 stopped: Callable[[], bool] = lambda: False,
                 prepare: Callable[[Any, Batch], Awaitable[None]] | None = None,
                 before_poll: Callable[[], Awaitable[None]] | None = None,
                 after_poll: Callable[[Batch], None] | None = None,
                 ahead: Callable[[Batch], Awaitable[None]] | None = None):
        if ahead is not None and retry_failed:
            raise ValueError("a loop that reads a failed batch again cannot fetch ahead of it")
        self.name, self.handle, self.commit, self.ahead = name, handle, commit, ahead
        self.max_records, self.poll_timeout_ms, self.retry_failed = max_records, poll_timeout_ms, retry_failed
        self.stopped, self.prepare, self.before_poll, self.after_poll = stopped, prepare, before_poll, after_poll
        self.busy = asyncio.Lock()
        self.to_commit: dict[TopicPartition, int] = {}
        self._committed_at = 0.0

    def listener(self, on_assigned: Callable[[list[Any]], Awaitable[None]], exclusive: bool) -> BatchListener:
        return BatchListener(self.busy, on_assigned, exclusive)

    async def run(self, consumer: Any) -> None:
        """Until ``stopped()`` or the handler says stop; the consumer is started and stopped by the caller."""
        backoff = Backoff()
        next_batch: asyncio.Task[Batch] | None = None
        try:
            while not self.stopped():
                if next_batch is None:
                    batch = await self._fetch(consumer, ahead=False)
                else:
                    batch, next_batch = await next_batch, None
                async with self.busy:
                    if self.prepare is not None:
                        await self.prepare(consumer, batch)
                    if any(batch.values()):
                        if self.ahead is not None:
                            next_batch = asyncio.ensure_future(self._fetch(consumer, ahead=True))
                        try:
                            if await self.handle(batch) is False:
                                return
                        except Exception as exc:
                            if not self.retry_failed:
                                raise
                            # Nothing is skipped: read again from the batch's first records.
                            log.warning("%s: batch failed (%s); reading it again", self.name, type(exc).__name__)
                            for tp, records in batch.items():
                                if records:
                                    consumer.seek(tp, records[0].offset)
                            await asyncio.sleep(backoff.next_delay())
                            continue
                        backoff = Backoff()
                        self.to_commit.update({tp: records[-1].offset + 1 for tp, records in batch.items() if records})
                await self._commit(consumer)
        finally:
            if next_batch is not None:  # fetched, never applied: the next owner or start reads it again
                next_batch.cancel()
                await asyncio.gather(next_batch, return_exceptions=True)

    async def _fetch(self, consumer: Any, ahead: bool) -> Batch:
        if self.before_poll is not None:
            await self.before_poll()
        batch: Batch = await consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        if self.after_poll is not None:
            self.after_poll(batch)
        if ahead and self.ahead is not None and any(batch.values()):
            await self.ahead(batch)
        return batch

    async def _commit(self, consumer: Any) -> None:
        if not self.to_commit or time.monotonic() - self._committed_at < self.commit.every_s:
            return
        owned = consumer.assignment()
        offsets = {tp: o for tp, o in self.to_commit.items() if tp in owned}
        self.to_commit.clear()
        self._committed_at = time.monotonic()
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:
            if not self.commit.advisory:
                raise
            log.info("%s: offsets not committed to Kafka (%s); read again or held elsewhere: harmless",
                     self.name, type(exc).__name__)
