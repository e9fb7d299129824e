"""An account's access archive: `GET /v1/accounts/{id}/export` (docs/access.md)."""

from __future__ import annotations

from typing import Any

from lifecycle.streams.access.requests import open_access
from lifecycle.streams.runtime.web import WebView, id_problem, problem

__all__ = ["PAGES"]


class Export(WebView):
    async def get(self, request: Any, account_id: str) -> Any:
        """The account's access archive (docs/access.md): the first call opens the request,
        202 while the stores answer, 200 with the zip once every store has."""
        if (bad := id_problem(account_id)) is not None:
            return self.refuse(400, [problem(None, "account_id", bad)])
        try:
            state = await self.services.writer_db.run("access request", lambda conn: open_access(
                conn, self.services.context, account_id))
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


PAGES: dict[str, type[WebView]] = {"/v1/accounts/{account_id}/export": Export}
