"""Redis as a downstream store: the cache keys and sets that belong to an account.

Convention (docs/erasure.md): every key holding an account's data carries the account id as a
Redis hash tag, ``...{<account_id>}...`` (which also keeps them in one cluster slot), and sets
that list accounts by id live under ``lifecycle:index:*``. Erasing deletes the tagged keys
(SCAN, then UNLINK in one MULTI with the receipt), and removes the id from every index set.
"""

from __future__ import annotations

import re
from typing import Any

from lifecycle.connectors.base.sink import (
    AccessOrder,
    AckStatus,
    ErasureOrder,
    HeldData,
    Outcome,
    Sink,
    jsonable,
    required,
    unreachable,
)
from lifecycle.core.config import Settings

__all__ = ["RedisSink", "account_keys_pattern", "INDEX_PATTERN"]

INDEX_PATTERN = "lifecycle:index:*"
_TAG = re.compile(r"\{([^{}]*)\}")  # every {...} in a key name: what a pattern *{id}* matches
RECEIPT_TTL_S = 90 * 86400


def _dump(client: Any, key: Any) -> Any:
    """A key's value as JSON holds it, whatever its type."""
    kind = client.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    value: Any = None
    if kind == "string":
        value = client.get(key)
    elif kind == "hash":
        value = client.hgetall(key)
    elif kind == "list":
        value = client.lrange(key, 0, -1)
    elif kind == "set":
        value = sorted(client.smembers(key))
    elif kind == "zset":
        value = client.zrange(key, 0, -1, withscores=True)
    return {"type": kind, "value": jsonable(_text(value))}


def _text(value: Any) -> Any:
    """Redis answers bytes; what decodes as UTF-8 reads as text."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    return value


def account_keys_pattern(account_id: str) -> str:
    escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in account_id)
    return f"*{{{escaped}}}*"


class RedisSink(Sink):
    """Delivery: at-least-once orders, exactly-once in effect (a receipt key per request)."""

    name = "redis"
    holds = ("account_profile", "session_logs")  # cached profiles and live sessions

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisSink:
        return cls(required(settings.redis_url, "LIFECYCLE_REDIS_URL"))

    def __init__(self, url: str):
        import redis

        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        """A batch in a fixed number of round trips: the receipts in one MGET, the keyspace scanned
        once for every order's tagged keys, one MULTI deleting them all, the receipts in one more
        pipeline (a SCAN per order made a burst of closures quadratic in the keyspace)."""
        with unreachable("redis", *self._errors):
            return self._erase(orders)

    def _erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        receipts = [f"lifecycle:receipt:{self.name}:{o.receipt_id}" for o in orders]
        done: dict[str, Outcome] = {}
        for order, stored in zip(orders, self.client.mget(receipts) if receipts else [], strict=True):
            if stored is not None:
                status, count = (stored.decode() if isinstance(stored, bytes) else str(stored)).split(":")
                done[order.request_id] = Outcome(AckStatus(status), int(count))
        todo = [(o, r) for o, r in zip(orders, receipts, strict=True) if o.request_id not in done]
        if not todo:
            return done
        tagged = self._tagged_keys({s for o, _ in todo for s in o.subjects})
        indexes = list(self.client.scan_iter(match=INDEX_PATTERN, count=1000))
        pipe = self.client.pipeline(transaction=True)
        shape: list[tuple[int, int]] = []  # per order: its UNLINK (0 or 1) and SREM commands
        for order, _ in todo:
            keys = sorted({k for s in order.subjects for k in tagged.get(s, ())})
            if keys:
                pipe.unlink(*keys)
            for index in indexes if order.subjects else ():
                pipe.srem(index, *order.subjects)
            shape.append((1 if keys else 0, len(indexes) if order.subjects else 0))
        results = iter(pipe.execute())
        outcomes: dict[str, Outcome] = {}
        receipt_pipe = self.client.pipeline(transaction=False)
        for (order, receipt), (unlinks, srems) in zip(todo, shape, strict=True):
            items = sum(int(next(results)) for _ in range(unlinks + srems))
            outcome = Outcome(AckStatus.ERASED if items else AckStatus.NOTHING_FOUND, items)
            outcomes[order.request_id] = outcome
            receipt_pipe.set(receipt, f"{outcome.status}:{outcome.items}", ex=RECEIPT_TTL_S)
        receipt_pipe.execute()
        return {**done, **outcomes}

    def _tagged_keys(self, subjects: set[str]) -> dict[str, list[Any]]:
        """subject -> every key whose name holds ``{subject}``, in one pass over the keyspace (a
        subject with a brace in it, which the pass cannot tell apart, is matched on its own)."""
        plain = {s for s in subjects if "{" not in s and "}" not in s}
        found: dict[str, list[Any]] = {}
        if plain:
            for key in self.client.scan_iter(match="*{*}*", count=1000):
                text = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
                for tag in _TAG.findall(text):
                    if tag in plain:
                        found.setdefault(tag, []).append(key)
        for subject in subjects - plain:
            found[subject] = list(self.client.scan_iter(match=account_keys_pattern(subject), count=1000))
        return found

    def verify(self, orders: list[ErasureOrder]) -> dict[str, int]:
        with unreachable("redis", *self._errors):
            tagged = self._tagged_keys({s for o in orders for s in o.subjects})
            indexes = list(self.client.scan_iter(match=INDEX_PATTERN, count=1000))
            asked = [o for o in orders if o.subjects]
            pipe = self.client.pipeline(transaction=False)
            for order in asked:
                for index in indexes:
                    pipe.smismember(index, list(order.subjects))
            answers = iter(pipe.execute() if asked and indexes else [])
            members = {o.request_id: sum(int(m) for _ in indexes for m in next(answers)) for o in asked}
            return {o.request_id: len({k for s in o.subjects for k in tagged.get(s, ())})
                    + members.get(o.request_id, 0) for o in orders}

    def export(self, orders: list[AccessOrder]) -> dict[str, HeldData]:
        with unreachable("redis", *self._errors):
            return {o.request_id: self._held(o) for o in orders}

    def _held(self, order: AccessOrder) -> HeldData:
        keys: dict[str, Any] = {}
        for subject in order.subjects:
            for key in self.client.scan_iter(match=account_keys_pattern(subject), count=1000):
                name = key.decode() if isinstance(key, bytes) else str(key)
                keys[name] = _dump(self.client, key)
        indexes = sorted(name.decode() if isinstance(name, bytes) else str(name) for name in
                         self.client.scan_iter(match=INDEX_PATTERN, count=1000)
                         if any(self.client.smismember(name, list(order.subjects))))
        return HeldData({"keys": keys, "listed_in": indexes}, len(keys) + len(indexes))

    def subject_ids(self) -> set[str]:
        with unreachable("redis", *self._errors):
            ids: set[str] = set()
            for key in self.client.scan_iter(match="*{*}*", count=1000):
                text = key.decode() if isinstance(key, bytes) else str(key)
                if not text.startswith("lifecycle:receipt:") and "{" in text and "}" in text.split("{", 1)[1]:
                    ids.add(text.split("{", 1)[1].split("}", 1)[0])
            for index in self.client.scan_iter(match=INDEX_PATTERN, count=1000):
                ids.update(m.decode() if isinstance(m, bytes) else str(m) for m in self.client.smembers(index))
            return ids

    def close(self) -> None:
        self.client.close()
