"""The consume loop's fetch-ahead (lifecycle/core/consume.py ``ahead``), as pure ordering logic over a
stand-in consumer: the next batch is fetched and worked on while the handler awaits, never before
the batch in hand's ``prepare`` (the only place that seeks), batches are handled in order, and a
batch fetched ahead but never handled is dropped at a stop, its offsets not committed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from lifecycle.core.consume import Commit, ConsumeLoop

TP = TopicPartition("t", 0)


class _Consumer:
    def __init__(self, batches: int):
        self.left, self.offset, self.trace = batches, 0, []
        self.committed: dict = {}

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if self.left == 0:
            await asyncio.sleep(0.01)
            return {}
        self.left -= 1
        records = [SimpleNamespace(offset=self.offset + i) for i in range(3)]
        self.offset += 3
        self.trace.append(("fetch", records[0].offset))
        return {TP: records}

    def assignment(self) -> set:
        return {TP}

    async def commit(self, offsets: dict) -> None:
        self.committed.update(offsets)


def test_the_next_batch_is_fetched_and_decoded_while_the_handler_awaits():
    consumer = _Consumer(batches=4)
    handled: list[int] = []

    async def prepare(_: object, batch: dict) -> None:
        consumer.trace.append(("prepare", batch[TP][0].offset))

    async def ahead(batch: dict) -> None:
        consumer.trace.append(("ahead", batch[TP][0].offset))

    async def handle(batch: dict) -> bool:
        first = batch[TP][0].offset
        consumer.trace.append(("handle", first))
        await asyncio.sleep(0.01)  # the database's answer: the next fetch runs meanwhile
        handled.append(first)
        return len(handled) < 3  # the third batch stops the loop

    loop = ConsumeLoop("t", handle, max_records=3, poll_timeout_ms=1, commit=Commit(), prepare=prepare, ahead=ahead)
    asyncio.run(loop.run(consumer))

    assert handled == [0, 3, 6]
    assert consumer.trace == [
        ("fetch", 0), ("prepare", 0), ("handle", 0),
        ("fetch", 3), ("ahead", 3), ("prepare", 3), ("handle", 3),
        ("fetch", 6), ("ahead", 6), ("prepare", 6), ("handle", 6),
        ("fetch", 9), ("ahead", 9),  # fetched ahead of a stop: never handled
    ]
    assert consumer.committed == {TP: 6}  # up to the second batch; the third said stop, the fourth was dropped


def test_a_loop_that_reads_a_failed_batch_again_may_not_fetch_ahead():
    async def nothing(_: dict) -> None:
        return None

    with pytest.raises(ValueError, match="fetch ahead"):
        ConsumeLoop("t", nothing, max_records=1, poll_timeout_ms=1, commit=Commit(), retry_failed=True, ahead=nothing)
