"""Dead letters of consumed records: the original sealed under its subject's dead-letter key
(streams/runtime/sealing.py), framed with the reason and origin (streams/runtime/decoding.py), sent on
`dead-letters` through the app's producer."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.database import Database
from lifecycle.streams.runtime.decoding import Origin, Rejected, capped, dead_letter
from lifecycle.streams.runtime.sealing import seal_letter

__all__ = ["DeadLetters", "SendDeadLetter"]

# Queues the dead letter of a consumed record; returns what to await before its batch is acknowledged.
SendDeadLetter = Callable[[Origin, bytes | None, Rejected], Awaitable[Any]]

log = logging.getLogger("lifecycle.worker")


class DeadLetters:
    def __init__(self, context: PipelineContext, keys_db: Database, topic: Any):
        self.context, self.keys_db, self.topic = context, keys_db, topic

    async def send(self, origin: Origin, original: bytes | None, rejected: Rejected) -> Any:
        """Queue the dead letter of a consumed record; returns the delivery future to await before
        the record's batch is acknowledged."""
        ctx = self.context
        now = ctx.clock.now_ms()
        key, sealed, sealed_for = await seal_letter(self.keys_db, ctx.data_keys, ctx.policy, now, origin.key,
                                                    capped(original))
        key, value, headers = dead_letter(ctx.codec, rejected, dataclasses.replace(origin, key=key), sealed, now,
                                          original_size=len(original) if original is not None else 0,
                                          sealed_for=sealed_for)
        log.warning("dead-lettered %s[%d]@%d: %s", origin.topic, origin.partition, origin.offset, rejected.reason)
        return await self.topic.send(key=key, value=value, headers=headers)
