"""The emitter SDK for Python upstream services.

Validates every event exactly as the HTTP endpoint and the intake stage do, seals its personal
fields under its subject's data keys (docs/crypto-shredding.md), encodes it in the Confluent wire
format and produces it keyed by its subject, with ``acks=all``, batching, and the idempotent
producer where the broker supports it.

Keys come from the pipeline's key service (``LIFECYCLE_KEYS_URL`` and the service's own token,
``LIFECYCLE_KEYS_TOKEN``), or, for the pipeline's own tools on its machine, from its database
(``LIFECYCLE_POSTGRES_DSN`` and the master key). ``encrypt=False`` sends personal fields in clear,
as a producer outside the pipeline might: tests and tools use it to play one.
"""

from __future__ import annotations

import base64
import functools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.core.backoff import Backoff, RetryDeadline
from lifecycle.core.config import Settings
from lifecycle.core.datakeys import DataKey, DataKeys, open_data_keys
from lifecycle.core.errors import ConfigError, LifecycleError
from lifecycle.schemas.catalog import Catalog, RecordType, load_catalog
from lifecycle.schemas.codec import Codec
from lifecycle.schemas.gpc import gpc_signals
from lifecycle.schemas.personal import key_pairs, seal
from lifecycle.schemas.registry import make_registry
from lifecycle.schemas.validate import from_json, subject_key

__all__ = ["Emitter", "KeyService", "KeysUnavailable"]


Valid = tuple[RecordType, dict[str, Any]]  # an event from_json accepted: (its record, its value)

KEYS_CACHED = 100_000  # keys a KeyService keeps at most
KEYS_PER_REQUEST = 1000  # the key service's limit per request (docs/protocol.md)
KEYS_DEADLINE_S = 120.0  # how long emit() waits for an unreachable key source before it raises


class KeysUnavailable(LifecycleError):
    """The key source stayed unreachable: the event was not sealed, so not sent."""


def psycopg_errors() -> type[Exception]:
    try:
        import psycopg
    except ImportError:  # a producer with the key service only may not have psycopg
        return OSError
    return psycopg.OperationalError


class KeyService:
    """The pipeline's key service over HTTP (POST /v1/keys), keys cached as a worker caches them."""

    def __init__(self, url: str, token: str, cache_s: float = 30):
        self.url = url.rstrip("/") + "/v1/keys"
        self.token = token
        self.cache_s = cache_s
        self._cache: dict[tuple[str, str], DataKey] = {}

    def keys_for(self, pairs: list[tuple[str, str]]) -> Callable[[str, str], DataKey]:
        now = time.monotonic()
        wanted = sorted({p for p in pairs if p not in self._cache or now - self._cache[p].at > self.cache_s})
        for start in range(0, len(wanted), KEYS_PER_REQUEST):
            self._fetch(wanted[start:start + KEYS_PER_REQUEST], now)
        return lambda subject, category: self._cache[(subject, category)]

    def _fetch(self, wanted: list[tuple[str, str]], now: float) -> None:
        body = json.dumps({"subjects": [{"subject": s, "category": c} for s, c in wanted]}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            answer = urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as exc:
            if exc.code < 500:  # a wrong token or request: waiting would not help
                raise ConfigError(f"the key service at {self.url} answered {exc.code}") from None
            raise
        if len(self._cache) + len(wanted) > KEYS_CACHED:  # a long-lived producer meets new subjects for ever
            self._cache = {p: k for p, k in self._cache.items() if now - k.at <= self.cache_s}
            while len(self._cache) + len(wanted) > KEYS_CACHED:
                del self._cache[next(iter(self._cache))]  # the oldest fetched first
        with answer:
            for item in json.loads(answer.read())["keys"]:
                raw = base64.b64decode(item["key"]) if item["key"] else None
                self._cache[(item["subject"], item["category"])] = DataKey(
                    item["kid"], AESGCM(raw) if raw else None, raw, now)


class _DatabaseKeys:
    """The data keys straight from the pipeline's database (its own tools, on its machine)."""

    def __init__(self, settings: Settings):
        import psycopg

        self.keys: DataKeys = open_data_keys(settings)
        self.dsn = settings.postgres_dsn or ""
        self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)

    def keys_for(self, pairs: list[tuple[str, str]]) -> Callable[[str, str], DataKey]:
        import psycopg

        if self._conn.closed or self._conn.broken:  # the database restarted since
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        prepared = self.keys.prepare_sync(self._conn, pairs)
        return lambda subject, category: prepared[(self.keys.hash_of(subject), category)]

    def close(self) -> None:
        self._conn.close()


class Emitter:
    """``with Emitter(settings) as em: em.emit(event)``; ``flush()`` waits for the broker."""

    def __init__(self, settings: Settings, *, catalog: Catalog | None = None, idempotent: bool | None = None,
                 encrypt: bool | None = None):
        from kafka import KafkaProducer

        self.encrypt = settings.encrypt_personal_data if encrypt is None else encrypt
        self._keys: KeyService | _DatabaseKeys | None = None
        if self.encrypt:
            if settings.keys_url:
                if not settings.keys_token:
                    raise ConfigError("LIFECYCLE_KEYS_URL is set: LIFECYCLE_KEYS_TOKEN is needed with it")
                first = settings.keys_token.split(",")[0].strip()  # the newest of a rotation comes first
                self._keys = KeyService(settings.keys_url, first, settings.data_key_cache_s)
            elif settings.postgres_dsn:
                self._keys = _DatabaseKeys(settings)
            else:
                raise ConfigError("the emitter seals personal data: set LIFECYCLE_KEYS_URL and LIFECYCLE_KEYS_TOKEN "
                                  "(the pipeline's key service), or LIFECYCLE_POSTGRES_DSN on the pipeline's machine")

        self.settings = settings
        self.catalog = catalog or load_catalog()
        self.codec = Codec(
            make_registry(settings.schema_registry_url, self.catalog), self.catalog, topic_prefix=settings.topic_prefix
        )
        if idempotent is None:
            idempotent = settings.kafka_idempotence if settings.kafka_idempotence is not None else False
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            linger_ms=5,
            batch_size=256 * 1024,
            enable_idempotence=idempotent,
            retries=5,
            client_id="lifecycle-emitter",
            **settings.kafka_client_kwargs(),
        )
        self._futures: list[Any] = []

    def emit(self, event: dict[str, Any], *, gpc: bool = False) -> str:
        """Validate and send one flat JSON-style event; returns its event_id. ``gpc``: the request
        behind it carried Global Privacy Control (`Sec-GPC: 1`): a `consent.gpc_signal` for its
        subjects goes too (docs/processors.md). Raises ValidationFailed naming every bad field;
        nothing is sent then."""
        return self.emit_many([event], gpc=gpc)[0]

    def emit_many(self, events: Iterable[dict[str, Any]], *, gpc: bool = False) -> list[str]:
        """``emit`` for a batch, all or nothing: every event validated first (ValidationFailed names
        the first bad one's fields, nothing sent), then the keys of all of them fetched in one
        request, sealed and queued. Returns their event_ids in order."""
        return self.emit_valid([self.check(e) for e in events], gpc=gpc)

    def check(self, event: dict[str, Any]) -> Valid:
        """One event validated (ValidationFailed otherwise), for ``emit_valid``."""
        return from_json(event, self.catalog)

    def emit_valid(self, items: list[Valid], *, gpc: bool = False) -> list[str]:
        """Seal and queue events ``check`` accepted: one key request for the whole batch."""
        ids = [str(val["event_id"]) for _, val in items]
        if gpc:
            items = [*items, *gpc_signals(self.catalog, items, "gpc-relay")]
        subjects = [subject_key(rec, val) for rec, val in items]
        for (rec, _), sealed, subject in zip(items, self.sealed_many(items, subjects), subjects, strict=True):
            self.send_raw(self.settings.topic(rec.topic), subject.encode(), self.codec.encode(rec, sealed))
        return ids

    def sealed_many(self, items: list[Valid], subjects: list[str]) -> list[dict[str, Any]]:
        """Each value with its personal fields sealed under its subject's keys, fetched at once."""
        pairs = [p for (rec, _), subject in zip(items, subjects, strict=True) for p in key_pairs(rec, subject)]
        if self._keys is None or not pairs:
            return [val for _, val in items]
        backoff = Backoff(first_s=0.2, max_s=5.0, deadline_s=KEYS_DEADLINE_S)
        while True:  # the key service or database down for a while: wait for it, then say so
            try:
                key_for = self._keys.keys_for(pairs)
                break
            except (OSError, psycopg_errors()) as exc:
                try:
                    time.sleep(backoff.next_delay())
                except RetryDeadline:
                    raise KeysUnavailable(f"no data key within {KEYS_DEADLINE_S:.0f} s ({type(exc).__name__}); "
                                          "the event was not sent") from None
        return [seal(functools.partial(key_for, subject), rec, val, subject)
                for (rec, val), subject in zip(items, subjects, strict=True)]

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        """Produce bytes as they are (tools and tests use it to inject any record)."""
        self._futures.append(self._producer.send(topic, key=key, value=value, headers=headers or []))

    def flush(self, timeout_s: float = 30) -> int:
        """Wait until the broker acknowledged everything sent; returns how many."""
        self._producer.flush(timeout=timeout_s)
        done = 0
        for fut in self._futures:
            fut.get(timeout=timeout_s)  # raises if the broker refused a record
            done += 1
        self._futures.clear()
        return done

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close(timeout=10)
            if isinstance(self._keys, _DatabaseKeys):
                self._keys.close()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
