"""Acknowledgements that cannot be forged: each store signs its acks with a key of its own
(HMAC-SHA256 over the ack's framed bytes, in the header ``lifecycle.signature``), and the
orchestrator believes only an ack signed with the key of the store it names (docs/erasure.md).

HMAC rather than signatures: the orchestrator holds every store's key anyway (it must check
them), a store needs only its own, and a key is one random value to hand over. The keys live in
PostgreSQL wrapped by the master key (lifecycle/core/crypto.py), never in clear; the built-in
stores' keys are created by the worker at start, a foreign store's by `lifecycle store add NAME`,
which prints it once for its owner. A connector gets its key from ``LIFECYCLE_STORE_KEY`` (hex),
else from the database with the master key (the pipeline's own connectors, on its machine).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

from lifecycle.core.crypto import KeyWrapper
from lifecycle.core.errors import ConfigError

__all__ = ["DDL", "ensure_table", "SIGNATURE_HEADER", "ensure_store_keys", "load_store_keys", "sign_ack",
           "ack_signature_problem", "add_store_key"]

SIGNATURE_HEADER = "lifecycle.signature"
DDL = """
CREATE TABLE IF NOT EXISTS store_keys (
    store      text PRIMARY KEY,
    wrapped    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""


def _wrap(wrapper: KeyWrapper, store: str, key: bytes) -> bytes:
    return wrapper.wrap(store, "store-key", "acknowledgements", key)


def ensure_store_keys(conn: Any, wrapper: KeyWrapper, stores: Iterable[str]) -> None:
    """Create the keys the stores lack (``conn``: sync psycopg, autocommit)."""
    ensure_table(conn)
    for store in stores:
        conn.execute("INSERT INTO store_keys (store, wrapped) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (store, _wrap(wrapper, store, secrets.token_bytes(32))))


def add_store_key(conn: Any, wrapper: KeyWrapper, store: str, *, replace: bool = False) -> bytes:
    """The key of ``store`` (a store's registration): created if it has none (a worker creates one
    for every configured store), the one it has otherwise; ``replace`` rotates it."""
    if not 0 < len(store) <= 64 or not store.isprintable():
        raise ConfigError("a store name is 1 to 64 printable characters")
    ensure_table(conn)
    if not replace:
        row = conn.execute("SELECT wrapped FROM store_keys WHERE store = %s", (store,)).fetchone()
        if row is not None:
            return wrapper.unwrap(store, "store-key", "acknowledgements", bytes(row[0]))
    key = secrets.token_bytes(32)
    conn.execute("INSERT INTO store_keys (store, wrapped) VALUES (%s, %s) ON CONFLICT (store) DO UPDATE "
                 "SET wrapped = EXCLUDED.wrapped, created_at = now()", (store, _wrap(wrapper, store, key)))
    return key


def ensure_table(conn: Any) -> None:
    """Create store_keys where it does not exist yet: a role that may only read or write it may
    not run even CREATE TABLE IF NOT EXISTS."""
    if conn.execute("SELECT to_regclass('store_keys')").fetchone()[0] is None:
        conn.execute(DDL)


def load_store_keys(conn: Any, wrapper: KeyWrapper) -> dict[str, bytes]:
    ensure_table(conn)
    return {store: wrapper.unwrap(store, "store-key", "acknowledgements", bytes(wrapped))
            for store, wrapped in conn.execute("SELECT store, wrapped FROM store_keys").fetchall()}


def sign_ack(key: bytes, value: bytes) -> list[tuple[str, bytes]]:
    """The headers that carry the ack's signature."""
    return [(SIGNATURE_HEADER, hmac.new(key, value, hashlib.sha256).hexdigest().encode())]


def ack_signature_problem(keys: dict[str, bytes], store: str, value: bytes,
                          headers: Iterable[tuple[str, bytes]] | None) -> tuple[str, str] | None:
    """(reason, message) when the ack is not signed by the store it names; None when it is."""
    given = [v for k, v in headers or [] if k == SIGNATURE_HEADER]
    if not given:
        return "unsigned_ack", "no lifecycle.signature header"
    key = keys.get(store)
    if key is None:
        return "bad_signature", "no key is registered for the store this ack names"
    expected = hmac.new(key, value, hashlib.sha256).hexdigest().encode()
    if len(given) != 1 or not hmac.compare_digest(given[0], expected):
        return "bad_signature", "signature does not match the key of the store this ack names"
    return None
