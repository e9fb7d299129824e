"""An account's erasures: `GET /v1/accounts/{id}/erasure` (docs/erasure.md)."""

from __future__ import annotations

from typing import Any

from lifecycle.streams.erasure.ledger import erasure_status
from lifecycle.streams.runtime.web import WebView, id_problem, iso, problem

__all__ = ["PAGES"]


class Erasure(WebView):
    async def get(self, request: Any, account_id: str) -> Any:
        if (bad := id_problem(account_id)) is not None:
            return self.refuse(400, [problem(None, "account_id", bad)])
        context = self.services.context
        try:
            statuses = await self.services.reader_db.run("erasure query", lambda conn: erasure_status(
                conn, context.keys, account_id))
        except Exception as exc:
            return self.unavailable("erasure query", exc)
        if not statuses:
            return self.json({"erasures": [], "error": "no erasure for this account"}, status=404)
        now = context.clock.now_ms()
        for status in statuses:
            status["overdue"] = status["state"] == "open" and status["deadline"] < now
            for key in ("opened_at", "deadline", "completed_at", "keys_destroyed_at"):
                status[key] = iso(status[key]) if status[key] is not None else None
            for store in status["stores"]:
                for key in ("acknowledged_at", "verified_at"):
                    store[key] = iso(store[key]) if store[key] else None
        return self.json({"erasures": statuses})


PAGES: dict[str, type[WebView]] = {"/v1/accounts/{account_id}/erasure": Erasure}
