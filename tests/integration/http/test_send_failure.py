"""A batch answered 202 whose send to the broker failed (streams/http/ingestion.py ``_send``): the
journal takes its "on its way" mark off, so the worker's journal relay sends it within seconds, not
after the 60 s that covers a process killed between its answer and its send.

The accepting side runs in this test's process, over real HTTP, against the real PostgreSQL, with
the one fault injected where it happens: the first send raises. A worker applies what the relay
sends."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import psycopg
from aiohttp import web
from aiohttp.test_utils import TestServer

from lifecycle.core.clock import make_clock
from lifecycle.core.datakeys import open_data_keys
from lifecycle.core.keys import open_keyring
from lifecycle.schemas.catalog import load_catalog
from lifecycle.schemas.codec import Codec
from lifecycle.schemas.registry import make_registry
from lifecycle.streams.http.ingestion import Ingestion
from lifecycle.streams.ingest.journal import STALE_AFTER_S
from lifecycle.streams.runtime.database import Database
from lifecycle.streams.runtime.sending import Row
from tests.helpers import T0, event, metric, wait_for


def _journal(settings) -> list[tuple[str, bool]]:
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        return [(str(i), marked) for i, marked in
                conn.execute("SELECT event_id, sent_at IS NOT NULL FROM ingest_journal").fetchall()]


def test_a_failed_send_is_unmarked_and_the_relay_sends_it_within_seconds(settings, worker):
    attempts: list[int] = []

    async def broker_unreachable(rows: list[Row]) -> None:
        attempts.append(len(rows))
        raise ConnectionError("broker unreachable")

    batch = [event("session.file_transferred", T0 + n, account="acc-unsent", session_id="su", mime_type="text/csv",
                   size_bytes=10 + n) for n in range(3)]

    async def post_once() -> tuple[int, dict]:
        catalog = load_catalog()
        keyring = open_keyring(settings, create=False, read_only=True)
        db = Database(settings.postgres_dsn or "")
        ingestion = Ingestion(settings, Codec(make_registry(settings.schema_registry_url, catalog), catalog,
                                              topic_prefix=settings.topic_prefix),
                              make_clock(settings.clock), open_data_keys(settings, keyring, create=False),
                              db, broker_unreachable, rejected=lambda reason: None, too_slow=lambda: None,
                              draining=lambda: False)

        async def events(request: web.Request) -> web.StreamResponse:
            status, body, headers = await ingestion.answer(request)
            return web.json_response(body, status=status, headers=headers)

        app = web.Application()
        app.router.add_post("/v1/events", events)
        server = TestServer(app)
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as client, \
                    client.post(server.make_url("/v1/events"), json=batch) as response:
                answer = (response.status, await response.json())
            await ingestion.settle(10)
        finally:
            await server.close()
            if db.conn is not None:
                await db.conn.close()
        return answer

    started = time.monotonic()
    status, body = asyncio.run(post_once())
    assert status == 202, body
    assert attempts == [3]  # the send was tried once, beside the answer, and failed
    # No mark left on the batch: the relay's next round takes it (a marked one waits STALE_AFTER_S).
    assert sorted(_journal(settings)) in ([], sorted((e["event_id"], False) for e in batch)), _journal(settings)
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                            event_type="session.file_transferred") == 3,
             deadline_s=STALE_AFTER_S / 3, what="the relay sent the unsent batch and the worker applied it")
    wait_for(lambda: _journal(settings) == [], deadline_s=10, what="the journal emptied")
    assert time.monotonic() - started < STALE_AFTER_S / 2
