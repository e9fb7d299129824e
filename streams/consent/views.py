"""A subject's consent, with its receipts: `GET /v1/subjects/{id}/consent` (docs/consent.md)."""

from __future__ import annotations

from typing import Any

from lifecycle.streams.consent.processor import consent_state
from lifecycle.streams.consent.receipts import consent_receipts
from lifecycle.streams.runtime.web import WebView, id_problem, iso, problem

__all__ = ["PAGES"]


class Consent(WebView):
    async def get(self, request: Any, subject_id: str) -> Any:
        context = self.services.context
        at_raw = request.query.get("at")
        now = context.clock.now_ms()
        if at_raw is not None:
            try:
                now = int(at_raw)
            except ValueError:
                return self.refuse(400, [problem(None, "at", "epoch milliseconds expected")])
        if (bad := id_problem(subject_id)) is not None:
            return self.refuse(400, [problem(None, "subject_id", bad)])

        async def read(conn: Any) -> tuple[Any, Any]:
            return (await consent_state(conn, [subject_id], now),
                    await consent_receipts(conn, subject_id, now, context.policy))

        try:
            state, receipts = await self.services.reader_db.run("consent query", read)
        except Exception as exc:
            return self.unavailable("consent query", exc)
        subject = state[subject_id]
        return self.json({
            "subject_id": subject_id,
            "as_of": iso(now),
            "purposes": {
                p["purpose"]: {
                    "granted": p["granted"],
                    "given_at": iso(p["given_at"]),
                    "expires_at": iso(p["expires_at"]) if p["expires_at"] else None,
                    "policy_version": p["policy_version"],
                }
                for p in subject["purposes"]
            },
            "newsletter": subject["newsletter"],
            "receipts": receipts,  # docs/consent.md#receipts
        })


PAGES: dict[str, type[WebView]] = {"/v1/subjects/{subject_id}/consent": Consent}
