"""A relay woken by the transaction that gave it work: PostgreSQL's LISTEN/NOTIFY.

The outbox's insert trigger (streams/runtime/schema.sql) notifies ``outbox`` once per inserting
transaction, delivered when it commits; the relay then runs a round at once instead of at its
next polling tick, which took a tenth of a second per hop of an erasure (issue 15). The pause
between rounds stays as a fallback (a notification sent while the listener reconnects is not
queued for it), and a reconnect wakes the relay once, for whatever committed meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from lifecycle.core.backoff import Backoff
from lifecycle.streams.runtime.database import describe

__all__ = ["Wakeup", "OUTBOX_CHANNEL"]

log = logging.getLogger("lifecycle.outbox")

OUTBOX_CHANNEL = "lifecycle_outbox"


class Wakeup:
    def __init__(self, dsn: str, channel: str):
        self.dsn, self.channel = dsn, channel
        self._event = asyncio.Event()
        self.listening = False

    def clear(self) -> None:
        """Before a round: a commit from now on wakes the next wait."""
        self._event.clear()

    async def wait(self, timeout_s: float) -> None:
        """Until a notification (or one already arrived since ``clear``), at most ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)

    async def listen(self) -> None:
        """The task: listen for as long as the worker runs, reconnecting after a failure."""
        backoff = Backoff(first_s=0.2, max_s=10.0)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True,
                                                                 connect_timeout=10) as conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    self.listening = True
                    self._event.set()
                    backoff = Backoff(first_s=0.2, max_s=10.0)
                    async for _ in conn.notifies():
                        self._event.set()
            except Exception as exc:
                log.info("not listening for %s (%s); polling until reconnected", self.channel, describe(exc))
            self.listening = False
            await asyncio.sleep(backoff.next_delay())
