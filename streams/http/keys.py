"""The key service for producers that seal and consumers that open (docs/crypto-shredding.md,
docs/protocol.md): `POST /v1/keys` and `POST /v1/keys/lookup`."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from lifecycle.streams.http.auth import BodyTooLarge, BodyTooSlow, read_body
from lifecycle.streams.http.common import KID, MAX_BATCH, MAX_BODY_BYTES, ServiceView, id_problem, problem

__all__ = ["PAGES"]


class _KeysView(ServiceView):
    async def _body(self, request: Any, field: str) -> tuple[list[Any] | None, Any]:
        """(the body's list under ``field``, None) or (None, the answer that refuses it)."""
        try:
            body = await read_body(request, MAX_BODY_BYTES, self.services.pipeline.settings.http_body_timeout_s)
        except BodyTooLarge:
            return None, self.refuse(413, [problem(None, "$", "body too large")])
        except BodyTooSlow:
            self.services.pipeline.metrics.http_refused.labels("too_slow").inc()
            return None, self.refuse(408, [problem(None, "$", "body not received in time")],
                                     headers={"Connection": "close"})
        try:
            items = json.loads(body)[field]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None, self.refuse(400, [problem(None, field, "expected a JSON object with this list")])
        if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
            return None, self.refuse(400, [problem(None, field, f"1 to {MAX_BATCH} items")])
        return items, None

    async def _keys(self, fn: Callable[[Any], Awaitable[Any]]) -> tuple[bool, Any]:
        """(done, answer): ``fn`` run on the database, or the 503 that says it is unavailable."""
        try:
            return True, await self.services.keys_db.run("data keys", fn)
        except Exception as exc:
            return False, self.unavailable("key service", exc)


class Keys(_KeysView):
    async def post(self, request: Any) -> Any:
        """The keys to seal with: one per (subject, category), created on first use; null once erased."""
        items, refusal = await self._body(request, "subjects")
        if items is None:
            return refusal
        known = set(self.services.pipeline.context.policy.categories)
        pairs, errors = [], []
        for index, item in enumerate(items):
            subject = item.get("subject") if isinstance(item, dict) else None
            category = item.get("category") if isinstance(item, dict) else None
            if not isinstance(subject, str) or id_problem(subject) is not None:
                errors.append(problem(index, "subject", "a string of 1 to 256 printable characters"))
            elif category not in known:
                errors.append(problem(index, "category", "not a category of the retention policy"))
            else:
                pairs.append((subject, category))
        if errors:
            return self.refuse(400, errors)
        data_keys = self.services.pipeline.context.data_keys
        done, prepared = await self._keys(lambda conn: data_keys.prepare(conn, pairs))
        if not done:
            return prepared
        out = []
        for subject, category in pairs:
            key = prepared[(data_keys.hash_of(subject), category)]
            out.append({"subject": subject, "category": category, "kid": key.kid,
                        "key": base64.b64encode(key.raw).decode() if key.raw else None})
        return self.json({"keys": out})


class KeyLookup(_KeysView):
    async def post(self, request: Any) -> Any:
        """The keys sealed values name: the key, or null once destroyed; unknown kids are absent."""
        kids, refusal = await self._body(request, "kids")
        if kids is None:
            return refusal
        if not all(isinstance(k, str) and KID.fullmatch(k) for k in kids):
            return self.refuse(400, [problem(None, "kids", "each a key id: 22 characters of base64url")])
        data_keys = self.services.pipeline.context.data_keys
        done, refusal = await self._keys(lambda conn: data_keys.load_kids(conn, kids))
        if not done:
            return refusal
        out: dict[str, str | None] = {}
        for kid in kids:
            key = data_keys.loaded(kid)
            if key is not None:
                out[kid] = base64.b64encode(key.raw).decode() if key.raw else None
        return self.json({"keys": out})


PAGES: dict[str, type[ServiceView]] = {"/v1/keys": Keys, "/v1/keys/lookup": KeyLookup}
