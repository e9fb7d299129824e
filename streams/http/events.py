"""`POST /v1/events` on the worker: one event or a batch as JSON, all or nothing (docs/protocol.md),
accepted as streams/http/ingestion.py says. While `up` drains before stopping, it answers 503."""

from __future__ import annotations

from typing import Any

from lifecycle.streams.http.common import ServiceView

__all__ = ["PAGES"]


class Events(ServiceView):
    async def post(self, request: Any) -> Any:
        status, body, headers = await self.services.ingestion.answer(request)
        return self.json(body, status=status, headers=headers)


PAGES: dict[str, type[ServiceView]] = {"/v1/events": Events}
