"""`POST /v1/events`: one event or a batch as JSON, all or nothing (docs/protocol.md).

A batch with any bad event is answered 400 with one error per bad field (its index, field and
problem; never its value) and nothing of it is sent. Otherwise the batch is written to the ingest
journal in PostgreSQL (streams/ingest/journal.py) and 202 comes back once that committed: nothing
answered 202 is lost, even if the broker's log is. The events are sent to the broker at once, beside
the answer; the journal relay sends whatever that send did not reach. While `up` drains before stopping, POST
answers 503. The bearer token, its scope and the body's size were checked before this view
(streams/http/auth.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from lifecycle.core.clock import latest_plausible
from lifecycle.schemas.errors import ValidationFailed
from lifecycle.schemas.gpc import gpc_signals
from lifecycle.schemas.validate import from_json, subject_key
from lifecycle.streams.http.auth import BodyTooLarge, BodyTooSlow, read_body
from lifecycle.streams.http.common import MAX_BATCH, MAX_BODY_BYTES, ServiceView, problem
from lifecycle.streams.ingest.journal import journal_accept, journal_mark_sent
from lifecycle.streams.runtime.database import describe
from lifecycle.streams.runtime.sealing import presealed_problems, seal_events

__all__ = ["PAGES"]

log = logging.getLogger("lifecycle.http")

SENDING_AT_ONCE = 4
Accepted = list[tuple[Any, dict[str, Any]]]  # (Avro record, value) of each valid event


class _Refused(Exception):
    """An answer other than 202, with the reason counted in lifecycle_events_rejected_total."""

    def __init__(self, status: int, reason: str, errors: list[dict[str, Any]], **kwargs: Any):
        super().__init__(reason)
        self.status, self.reason, self.errors, self.kwargs = status, reason, errors, kwargs


_UNAVAILABLE = [problem(None, "$", "database unavailable, retry")]


class Events(ServiceView):
    async def post(self, request: Any) -> Any:
        try:
            return await self._post(request)
        except _Refused as refused:
            if refused.reason:
                self.services.pipeline.metrics.events_rejected.labels("http", refused.reason).inc()
            return self.refuse(refused.status, refused.errors, **refused.kwargs)
        except Exception as exc:  # never a 500 with a traceback for a client's input
            log.warning("POST /v1/events failed: %s", describe(exc))
            return self.json({"error": "internal error"}, status=500)

    async def _post(self, request: Any) -> Any:
        if self.services.draining.exists():
            raise _Refused(503, "draining", [problem(None, "$", "stopping; retry against another worker")])
        accepted = await self._validated(await self._batch(request))
        # Global Privacy Control: the browser's opt-out travels with what it sends.
        signals = gpc_signals(self.services.pipeline.codec.catalog, accepted) \
            if request.headers.get("Sec-GPC", "").strip() == "1" else []
        rows = await self._journal(accepted + signals)
        await self._send_soon(rows)
        answer: dict[str, Any] = {"accepted": len(accepted), "event_ids": [v["event_id"] for _, v in accepted]}
        if signals:
            answer["gpc_signals"] = len(signals)
        return self.json(answer, status=202)

    async def _batch(self, request: Any) -> list[Any]:
        settings = self.services.pipeline.settings
        try:
            body = await read_body(request, MAX_BODY_BYTES, settings.http_body_timeout_s)
        except BodyTooLarge:
            raise _Refused(413, "too_large", [problem(None, "$", f"body over {MAX_BODY_BYTES} bytes")]) from None
        except BodyTooSlow:
            self.services.pipeline.metrics.http_refused.labels("too_slow").inc()
            raise _Refused(408, "", [problem(None, "$", "body not received in time")],
                           headers={"Connection": "close"}) from None
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise _Refused(400, "invalid_json", [problem(None, "$", "not valid JSON (UTF-8)")]) from None
        batch = doc if isinstance(doc, list) else [doc]
        if not batch or len(batch) > MAX_BATCH:
            raise _Refused(400, "invalid_event", [problem(None, "$", f"send 1 to {MAX_BATCH} events")])
        return batch

    async def _validated(self, batch: list[Any]) -> Accepted:
        pipeline = self.services.pipeline
        errors: list[dict[str, Any]] = []
        accepted: Accepted = []
        not_after = latest_plausible(pipeline.settings, pipeline.clock)
        for index, event in enumerate(batch):
            try:
                accepted.append(from_json(event, pipeline.codec.catalog, not_after))
            except ValidationFailed as exc:
                errors.extend(problem(index, e.field, e.problem) for e in exc.errors)
        if not errors and pipeline.settings.encrypt_personal_data:
            try:
                errors.extend(problem(index, name, "looks sealed (lc1:) but does not open as this subject's "
                                      "field: send it in clear, or sealed under its own subject's key")
                              for index, name in await presealed_problems(self.services.journal_db,
                                                                          pipeline.context.data_keys, accepted))
            except Exception as exc:
                log.warning("ingestion could not reach PostgreSQL: %s", describe(exc))
                raise _Refused(503, "database_unavailable", _UNAVAILABLE) from None
        if errors:
            raise _Refused(400, "invalid_event", errors)
        return accepted

    async def _journal(self, events: Accepted) -> list[tuple[str, str, bytes, bytes]]:
        """The events, sealed and framed, committed to the ingest journal: (event id, topic, key, value)."""
        pipeline = self.services.pipeline
        settings, codec, data_keys = pipeline.settings, pipeline.codec, pipeline.context.data_keys

        async def accept(conn: Any) -> list[tuple[str, str, bytes, bytes]]:
            # Sealed in the journal's transaction: the keys it creates commit with the events.
            values = (await seal_events(conn, data_keys, events) if settings.encrypt_personal_data
                      else [v for _, v in events])
            framed = [(str(value["event_id"]), settings.topic(record.topic),
                       subject_key(record, value).encode(), codec.encode(record, value))
                      for (record, _), value in zip(events, values, strict=True)]
            await journal_accept(conn, framed)
            return framed

        try:
            async with self.services.journal_lock:
                return await self.services.journal_db.run("ingest journal", accept)
        except Exception as exc:
            log.warning("ingestion could not reach PostgreSQL: %s", describe(exc))
            raise _Refused(503, "database_unavailable", _UNAVAILABLE) from None

    async def _send_soon(self, rows: list[tuple[str, str, bytes, bytes]]) -> None:
        """Send after answering: the batch is durable in the journal already, and waiting for the
        broker's acknowledgement before the 202 left the service idle between requests. At most
        SENDING_AT_ONCE batches are on their way; a request beyond that waits for one (so a broker
        slower than the clients slows the answers instead of growing a queue)."""
        sending = self.services.sending
        while len(sending) >= SENDING_AT_ONCE:
            await asyncio.wait(set(sending), return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.ensure_future(self._send(rows))
        sending.add(task)
        task.add_done_callback(sending.discard)

    async def _send(self, rows: list[tuple[str, str, bytes, bytes]]) -> None:
        """Durable already: a failure here is the journal relay's to repair."""
        producer = self.services.pipeline.app.producer
        try:
            futures = [await producer.send(topic, key=key, value=value, partition=None, timestamp=None, headers=None)
                       for _, topic, key, value in rows]
            for fut in futures:
                await fut
            async with self.services.journal_lock:
                await self.services.journal_db.run("ingest journal",
                                                   lambda conn: journal_mark_sent(conn, [r[0] for r in rows]))
        except Exception as exc:
            log.info("accepted events not sent yet (%s); the journal relay will send them", describe(exc))


PAGES: dict[str, type[ServiceView]] = {"/v1/events": Events}
