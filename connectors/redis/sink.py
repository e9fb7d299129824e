"""Redis as a downstream store: the cache keys and sets that belong to an account.

Convention (docs/erasure.md): every key holding an account's data carries the account id as a
Redis hash tag, ``...{<account_id>}...`` (which also keeps them in one cluster slot), and sets
that list accounts by id live under ``lifecycle:index:*``. Erasing deletes the tagged keys
(SCAN, then UNLINK in one MULTI with the receipt), and removes the id from every index set.
"""

from __future__ import annotations

from typing import Any

from lifecycle.connectors.base.sink import (
    AccessOrder,
    AckStatus,
    ErasureOrder,
    Held,
    Outcome,
    Sink,
    TransientStoreError,
    jsonable,
    required,
)
from lifecycle.core.config import Settings

__all__ = ["RedisSink", "account_keys_pattern", "INDEX_PATTERN"]

INDEX_PATTERN = "lifecycle:index:*"
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
        try:
            return {o.request_id: self._erase_one(o) for o in orders}
        except self._errors as exc:
            raise TransientStoreError("redis unreachable") from exc

    def _erase_one(self, order: ErasureOrder) -> Outcome:
        receipt = f"lifecycle:receipt:{self.name}:{order.receipt_id}"
        stored = self.client.get(receipt)
        if stored is not None:
            status, count = (stored.decode() if isinstance(stored, bytes) else str(stored)).split(":")
            return Outcome(AckStatus(status), int(count))
        keys: list[Any] = []
        for subject in order.subjects:
            keys.extend(self.client.scan_iter(match=account_keys_pattern(subject), count=1000))
        indexes = list(self.client.scan_iter(match=INDEX_PATTERN, count=1000))
        pipe = self.client.pipeline(transaction=True)
        if keys:
            pipe.unlink(*keys)
        for index in indexes:
            pipe.srem(index, *order.subjects)
        results = pipe.execute()
        items = (results[0] if keys else 0) + sum(int(r) for r in results[1 if keys else 0:])
        outcome = Outcome(AckStatus.ERASED if items else AckStatus.NOTHING_FOUND, items)
        self.client.set(receipt, f"{outcome.status}:{outcome.items}", ex=RECEIPT_TTL_S)
        return outcome

    def verify(self, orders: list[ErasureOrder]) -> dict[str, int]:
        try:
            indexes = list(self.client.scan_iter(match=INDEX_PATTERN, count=1000))
            found = {}
            for order in orders:
                keys = sum(1 for s in order.subjects
                           for _ in self.client.scan_iter(match=account_keys_pattern(s), count=1000))
                members = sum(int(m) for index in indexes if order.subjects
                              for m in self.client.smismember(index, list(order.subjects)))
                found[order.request_id] = keys + members
            return found
        except self._errors as exc:
            raise TransientStoreError("redis unreachable") from exc

    def export(self, orders: list[AccessOrder]) -> dict[str, Held]:
        try:
            return {o.request_id: self._held(o) for o in orders}
        except self._errors as exc:
            raise TransientStoreError("redis unreachable") from exc

    def _held(self, order: AccessOrder) -> Held:
        keys: dict[str, Any] = {}
        for subject in order.subjects:
            for key in self.client.scan_iter(match=account_keys_pattern(subject), count=1000):
                name = key.decode() if isinstance(key, bytes) else str(key)
                keys[name] = _dump(self.client, key)
        indexes = sorted(name.decode() if isinstance(name, bytes) else str(name) for name in
                         self.client.scan_iter(match=INDEX_PATTERN, count=1000)
                         if any(self.client.smismember(name, list(order.subjects))))
        return Held({"keys": keys, "listed_in": indexes}, len(keys) + len(indexes))

    def subject_ids(self) -> set[str]:
        try:
            ids: set[str] = set()
            for key in self.client.scan_iter(match="*{*}*", count=1000):
                text = key.decode() if isinstance(key, bytes) else str(key)
                if not text.startswith("lifecycle:receipt:") and "{" in text and "}" in text.split("{", 1)[1]:
                    ids.add(text.split("{", 1)[1].split("}", 1)[0])
            for index in self.client.scan_iter(match=INDEX_PATTERN, count=1000):
                ids.update(m.decode() if isinstance(m, bytes) else str(m) for m in self.client.smembers(index))
            return ids
        except self._errors as exc:
            raise TransientStoreError("redis unreachable") from exc

    def close(self) -> None:
        self.client.close()
