"""The outbox relay is woken by the transaction that queued records (issue 15): a commit that
inserts into the outbox ends the relay's wait at once, long before its polling fallback; a
rolled-back insert does not; a listener whose connection is cut reconnects and wakes once."""

from __future__ import annotations

import asyncio
import time

import psycopg

from lifecycle.streams.runtime.database import apply_schema
from lifecycle.streams.runtime.wakeup import OUTBOX_CHANNEL, Wakeup

FALLBACK_S = 5.0


def _insert(dsn: str, commit: bool = True) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO outbox (topic, key, value) VALUES ('x', NULL, NULL), ('y', NULL, NULL)")
        if commit:
            conn.commit()
        else:
            conn.rollback()


async def _until_listening(wakeup: Wakeup) -> None:
    end = time.monotonic() + 10
    while not wakeup.listening:
        assert time.monotonic() < end, "the listener never connected"
        await asyncio.sleep(0.01)
    await wakeup.wait(1)  # the wake a (re)connect gives


def test_a_commit_that_queues_records_wakes_the_relay(settings):
    dsn = settings.postgres_dsn
    apply_schema(dsn)

    async def scenario() -> None:
        wakeup = Wakeup(dsn, OUTBOX_CHANNEL)
        task = asyncio.create_task(wakeup.listen())
        try:
            await _until_listening(wakeup)
            waits = []
            for _ in range(5):
                wakeup.clear()
                started = time.monotonic()
                await asyncio.gather(wakeup.wait(FALLBACK_S), asyncio.to_thread(_insert, dsn))
                waits.append(time.monotonic() - started)
            assert max(waits) < 1.0, waits

            wakeup.clear()  # nothing committed: the wait runs to its fallback
            started = time.monotonic()
            await asyncio.gather(wakeup.wait(1.0), asyncio.to_thread(_insert, dsn, False))
            assert time.monotonic() - started >= 0.95

            # The listener's connection is cut: it reconnects, and the reconnect wakes the relay.
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()")
            end = time.monotonic() + 10
            while wakeup.listening:
                assert time.monotonic() < end, "the cut was not noticed"
                await asyncio.sleep(0.01)
            await _until_listening(wakeup)
            wakeup.clear()
            started = time.monotonic()
            await asyncio.gather(wakeup.wait(FALLBACK_S), asyncio.to_thread(_insert, dsn))
            assert time.monotonic() - started < 1.0
        finally:
            task.cancel()

    asyncio.run(scenario())
