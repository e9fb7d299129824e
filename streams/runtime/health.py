"""What `/readyz` reports: whether the worker's two consumers (the intake loop's and the acks
loop's) hold their partitions, and the input logs found replaced or shortened since the start."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lifecycle.streams.runtime.metrics import Metrics

__all__ = ["Health"]

CONSUMERS = ("intake", "acks")


class Health:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.assigned = dict.fromkeys(CONSUMERS, False)
        self.log_resets: list[dict[str, Any]] = []
        self.rebuild_wanted = asyncio.Event()  # the state topics are republished when set (streams/rebuild.py)

    @property
    def ready(self) -> bool:
        return all(self.assigned.values())

    def consumer_assigned(self, consumer: str, assigned: bool) -> None:
        self.assigned[consumer] = assigned
        self.metrics.worker_ready.set(1 if self.ready else 0)

    def note_log_reset(self, topic: str, partition: int, stored: int, log_end: int) -> None:
        """The intake found a new or shorter log: count it, show it, have the state republished."""
        self.metrics.log_resets.labels(topic).inc()
        self.log_resets.append({"topic": topic, "partition": partition, "stored_offset": stored,
                                "log_end": log_end, "at_ms": time.time_ns() // 1_000_000})
        del self.log_resets[:-20]
        self.rebuild_wanted.set()
