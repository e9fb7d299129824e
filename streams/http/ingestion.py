"""Accepting events over HTTP, whoever serves the route: the worker's `POST /v1/events`
(streams/http/events.py) and `lifecycle front`, the same route in processes of its own
(streams/http/front.py). One batch, all or nothing (docs/protocol.md).

A batch with any bad event is answered 400 with one error per bad field (its index, field and
problem; never its value) and nothing of it is sent. Otherwise the batch is written to the ingest
journal in PostgreSQL (streams/ingest/journal.py) and 202 comes back once that committed: nothing
answered 202 is lost, even if the broker's log is. The events are sent to the broker at once, beside
the answer; the worker's journal relay sends whatever that send did not reach. The bearer token,
its scope and the body's size were checked before (streams/http/auth.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from lifecycle.core.clock import Clock, latest_plausible
from lifecycle.core.config import Settings
from lifecycle.core.datakeys import DataKeys
from lifecycle.schemas.codec import Codec
from lifecycle.schemas.errors import ValidationFailed
from lifecycle.schemas.gpc import gpc_signals
from lifecycle.schemas.validate import from_json, subject_key
from lifecycle.streams.http.auth import BodyTooLarge, BodyTooSlow, read_body
from lifecycle.streams.ingest.journal import STALE_AFTER_S, journal_accept, journal_unmark
from lifecycle.streams.runtime.database import Database, describe
from lifecycle.streams.runtime.sealing import presealed_problems, seal_events
from lifecycle.streams.runtime.sending import Row, SendAll
from lifecycle.streams.runtime.web import MAX_BATCH, MAX_BODY_BYTES, problem

__all__ = ["Ingestion", "Answer", "SENDING_AT_ONCE"]

log = logging.getLogger("lifecycle.http")

SENDING_AT_ONCE = 4
Accepted = list[tuple[Any, dict[str, Any]]]  # (Avro record, value) of each valid event
Answer = tuple[int, dict[str, Any], dict[str, str]]  # (status, JSON body, headers)


class _Refused(Exception):
    """An answer other than 202, with the reason counted in lifecycle_events_rejected_total."""

    def __init__(self, status: int, reason: str, errors: list[dict[str, Any]], headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.errors, self.headers = status, reason, errors, headers or {}


_UNAVAILABLE = [problem(None, "$", "database unavailable, retry")]


@dataclasses.dataclass
class Ingestion:
    """What accepting a batch needs; one per process. The journal has one connection, its
    transactions one at a time (``lock``)."""

    settings: Settings
    codec: Codec
    clock: Clock
    data_keys: DataKeys
    db: Database
    send_all: SendAll
    rejected: Callable[[str], None]  # counts a refusal by reason
    too_slow: Callable[[], None]  # counts a body that did not arrive in time
    draining: Callable[[], bool]  # True while stopping: POST answers 503
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    sending: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)  # accepted batches on their way

    async def answer(self, request: Any) -> Answer:
        """The answer to one `POST /v1/events` (an aiohttp request); never raises."""
        try:
            return await self._post(request)
        except _Refused as refused:
            if refused.reason:
                self.rejected(refused.reason)
            return refused.status, {"errors": refused.errors}, refused.headers
        except Exception as exc:  # never a 500 with a traceback for a client's input
            log.warning("POST /v1/events failed: %s", describe(exc))
            return 500, {"error": "internal error"}, {}

    async def _post(self, request: Any) -> Answer:
        if self.draining():
            raise _Refused(503, "draining", [problem(None, "$", "stopping; retry against another worker")])
        accepted = await self._validated(await self._batch(request))
        # Global Privacy Control: the browser's opt-out travels with what it sends.
        signals = gpc_signals(self.codec.catalog, accepted) \
            if request.headers.get("Sec-GPC", "").strip() == "1" else []
        rows = await self._journal(accepted + signals)
        await self._send_soon(rows)
        answer: dict[str, Any] = {"accepted": len(accepted), "event_ids": [v["event_id"] for _, v in accepted]}
        if signals:
            answer["gpc_signals"] = len(signals)
        return 202, answer, {}

    async def _batch(self, request: Any) -> list[Any]:
        try:
            body = await read_body(request, MAX_BODY_BYTES, self.settings.http_body_timeout_s)
        except BodyTooLarge:
            raise _Refused(413, "too_large", [problem(None, "$", f"body over {MAX_BODY_BYTES} bytes")]) from None
        except BodyTooSlow:
            self.too_slow()
            raise _Refused(408, "", [problem(None, "$", "body not received in time")],
                           {"Connection": "close"}) from None
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise _Refused(400, "invalid_json", [problem(None, "$", "not valid JSON (UTF-8)")]) from None
        batch = doc if isinstance(doc, list) else [doc]
        if not batch or len(batch) > MAX_BATCH:
            raise _Refused(400, "invalid_event", [problem(None, "$", f"send 1 to {MAX_BATCH} events")])
        return batch

    async def _validated(self, batch: list[Any]) -> Accepted:
        errors: list[dict[str, Any]] = []
        accepted: Accepted = []
        not_after = latest_plausible(self.settings, self.clock)
        for index, event in enumerate(batch):
            try:
                accepted.append(from_json(event, self.codec.catalog, not_after))
            except ValidationFailed as exc:
                errors.extend(problem(index, e.field, e.problem) for e in exc.errors)
        if not errors and self.settings.encrypt_personal_data:
            try:
                errors.extend(problem(index, name, "looks sealed (lc1:) but does not open as this subject's "
                                      "field: send it in clear, or sealed under its own subject's key")
                              for index, name in await presealed_problems(self.db, self.data_keys, accepted))
            except Exception as exc:
                log.warning("ingestion could not reach PostgreSQL: %s", describe(exc))
                raise _Refused(503, "database_unavailable", _UNAVAILABLE) from None
        if errors:
            raise _Refused(400, "invalid_event", errors)
        return accepted

    async def _journal(self, events: Accepted) -> list[Row]:
        """The events, sealed and framed, committed to the ingest journal."""
        settings, codec, data_keys = self.settings, self.codec, self.data_keys

        async def accept(conn: Any) -> list[Row]:
            # Sealed in the journal's transaction: the keys it creates commit with the events.
            values = (await seal_events(conn, data_keys, events) if settings.encrypt_personal_data
                      else [v for _, v in events])
            framed = [(str(value["event_id"]), settings.topic(record.topic),
                       subject_key(record, value).encode(), codec.encode(record, value))
                      for (record, _), value in zip(events, values, strict=True)]
            await journal_accept(conn, framed)
            return framed

        try:
            async with self.lock:
                return await self.db.run("ingest journal", accept)
        except Exception as exc:
            log.warning("ingestion could not reach PostgreSQL: %s", describe(exc))
            raise _Refused(503, "database_unavailable", _UNAVAILABLE) from None

    async def _send_soon(self, rows: list[Row]) -> None:
        """Send after answering: the batch is durable in the journal already, and waiting for the
        broker's acknowledgement before the 202 left the service idle between requests. At most
        SENDING_AT_ONCE batches are on their way; a request beyond that waits for one (so a broker
        slower than the clients slows the answers instead of growing a queue)."""
        while len(self.sending) >= SENDING_AT_ONCE:
            await asyncio.wait(set(self.sending), return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.ensure_future(self._send(rows))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send(self, rows: list[Row]) -> None:
        """Durable already, and marked as on its way: a failure takes the mark off, so that the
        journal relay sends them within seconds (had this process died instead, after STALE_AFTER_S)."""
        try:
            await self.send_all(rows)
        except Exception as exc:
            log.info("accepted events not sent yet (%s); the journal relay will send them", describe(exc))
            try:
                async with self.lock:
                    await self.db.run("ingest journal", lambda conn: journal_unmark(conn, [r[0] for r in rows]))
            except Exception as again:
                log.info("and the journal could not be told (%s): they go after %d s", describe(again),
                         STALE_AFTER_S)

    async def settle(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the batches on their way (before a process stops)."""
        if self.sending:
            await asyncio.wait(set(self.sending), timeout=timeout_s)

