"""An account's erasures and its access archive: `GET /v1/accounts/{id}/erasure` and
`GET /v1/accounts/{id}/export` (docs/erasure.md, docs/access.md)."""

from __future__ import annotations

from typing import Any

from lifecycle.streams.access import open_access
from lifecycle.streams.erasure import erasure_status
from lifecycle.streams.http.common import ServiceView, id_problem, iso, problem

__all__ = ["PAGES"]


class Erasure(ServiceView):
    async def get(self, request: Any, account_id: str) -> Any:
        if (bad := id_problem(account_id)) is not None:
            return self.refuse(400, [problem(None, "account_id", bad)])
        pipeline = self.services.pipeline
        try:
            statuses = await self.services.reader_db.run("erasure query", lambda conn: erasure_status(
                conn, pipeline.context.keys, account_id))
        except Exception as exc:
            return self.unavailable("erasure query", exc)
        if not statuses:
            return self.json({"erasures": [], "error": "no erasure for this account"}, status=404)
        now = pipeline.clock.now_ms()
        for status in statuses:
            status["overdue"] = status["state"] == "open" and status["deadline"] < now
            for key in ("opened_at", "deadline", "completed_at", "keys_destroyed_at"):
                status[key] = iso(status[key]) if status[key] is not None else None
            for store in status["stores"]:
                for key in ("acknowledged_at", "verified_at"):
                    store[key] = iso(store[key]) if store[key] else None
        return self.json({"erasures": statuses})


class Export(ServiceView):
    async def get(self, request: Any, account_id: str) -> Any:
        """The account's access archive (docs/access.md): the first call opens the request,
        202 while the stores answer, 200 with the zip once every store has."""
        if (bad := id_problem(account_id)) is not None:
            return self.refuse(400, [problem(None, "account_id", bad)])
        try:
            state = await self.services.access_db.run("access request", lambda conn: open_access(
                conn, self.services.pipeline.context, account_id))
        except Exception as exc:
            return self.unavailable("access request", exc)
        if state is None:
            return self.json({"error": "no such account"}, status=404)
        archive = state.pop("archive")
        if archive is None:
            return self.json(state, status=202, headers={"Retry-After": "5"})
        return self.bytes(archive, content_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="access-{state["request_id"]}.zip"',
            "X-Archive-SHA256": state["archive_sha256"]})


PAGES: dict[str, type[ServiceView]] = {"/v1/accounts/{account_id}/erasure": Erasure,
                                       "/v1/accounts/{account_id}/export": Export}
