"""Acknowledgements that cannot be forged, even by the pipeline: each store signs its acks with an
Ed25519 key of its own, whose private half only the store holds; the pipeline keeps the public
half and believes only an ack signed by the store it names (docs/security.md).

Signature: header ``lifecycle.signature`` = ``ed25519:`` + base64 of the Ed25519 signature of the
ack's value bytes (the Confluent-framed Avro). A store's key file holds ``ed25519:`` + 64 hex digits
(the private key's raw bytes), mode 0600.

How a store gets its key: `lifecycle store add NAME` makes a pair, keeps the public half in
``store_keys`` and hands the private half to the store's owner (once; `--rotate` replaces it). A
built-in connector does the same for itself at its first start when it has no key file: it writes
``<state>/secrets/stores/NAME.key`` and registers the public half with its own PostgreSQL role,
which may touch its own row only.

Migration from the HMAC keys of before (issue 26): a row with a wrapped HMAC key and no public key
still has its HMAC-signed acks (header = hex HMAC-SHA256) accepted, until the store gets a signing
key (`store add NAME --rotate`, or a built-in connector's first start); from then on its HMAC key
is gone and such acks are refused.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lifecycle.core.crypto import KeyWrapper
from lifecycle.core.errors import ConfigError

__all__ = ["RECEIPT_HEADER", "receipt_statement", "receipt_problem", "verify_receipt", "DDL", "ensure_table",
           "SIGNATURE_HEADER", "StoreKey", "AckSigner", "load_store_keys", "sign_ack", "ack_signature_problem",
           "register_store", "register_public_key", "fingerprint", "store_key_path", "check_store_name"]

SIGNATURE_HEADER = "lifecycle.signature"
# The store's signature of its receipt statement (below): what a certificate of erasure carries, so
# that an auditor checks each store's own word offline, without the ack (which names the account).
RECEIPT_HEADER = "lifecycle.receipt-signature"
RECEIPT_FORMAT = "lifecycle-store-receipt/1"
RECEIPT_FIELDS = ("request_id", "store", "action", "round", "status", "items_erased", "items_found",
                  "completed_at", "nonce")
_ED25519 = b"ed25519:"
DDL = """
CREATE TABLE IF NOT EXISTS store_keys (
    store      text PRIMARY KEY,
    wrapped    bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE store_keys ADD COLUMN IF NOT EXISTS public_key bytea;
ALTER TABLE store_keys ALTER COLUMN wrapped DROP NOT NULL
"""


def receipt_statement(ack: dict[str, Any]) -> bytes:
    """The canonical bytes a store signs for one ErasureAck: its answer without the account id (a
    certificate carries it). JSON, keys sorted, no spaces, ASCII."""
    body = {name: getattr(ack.get(name), "value", ack.get(name)) for name in RECEIPT_FIELDS}  # enums as text
    body["action"] = body["action"] or "erase"
    body["round"] = body["round"] or 0
    body["items_found"] = body["items_found"] or 0
    body["nonce"] = body["nonce"] or ""
    body["format"] = RECEIPT_FORMAT
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def verify_receipt(public: bytes, statement: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (``ed25519:`` + base64) is the store's over ``statement``."""
    if not signature.startswith(_ED25519):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(signature[len(_ED25519):],
                                                                           validate=True), statement)
    except (ValueError, binascii.Error, InvalidSignature):
        return False
    return True


def receipt_problem(keys: dict[str, StoreKey], ack: dict[str, Any],
                    headers: Iterable[tuple[str, bytes]] | None) -> tuple[str, str] | None:
    """(reason, message) when a store with a signing key did not sign its receipt; None otherwise (a
    legacy store has none: its certificate entry says so)."""
    key = keys.get(ack["store"])
    if key is None or key.public is None:
        return None
    given = [v for k, v in headers or [] if k == RECEIPT_HEADER]
    if len(given) != 1 or not verify_receipt(key.public, receipt_statement(ack), given[0]):
        return "bad_receipt", "no receipt signature, or not the store's over this ack's receipt statement"
    return None


def fingerprint(public: bytes) -> str:
    """The first 16 hex digits of the SHA-256 of a raw public key: how a certificate names it."""
    return hashlib.sha256(public).hexdigest()[:16]


def check_store_name(store: str) -> str:
    if not 0 < len(store) <= 64 or not store.isprintable() or "/" in store or store.startswith("."):
        raise ConfigError("a store name is 1 to 64 printable characters, no '/'")
    return store


def store_key_path(state_dir: Path, store: str) -> Path:
    return state_dir / "secrets" / "stores" / f"{check_store_name(store)}.key"


@dataclasses.dataclass(frozen=True)
class StoreKey:
    """What the pipeline holds of one store's key: the public half, or (before its migration) the
    store's legacy HMAC key."""

    public: bytes | None
    legacy: bytes | None = dataclasses.field(default=None, repr=False)


class AckSigner:
    """What a store holds: its private key (or, before the migration, its HMAC key)."""

    def __init__(self, text: str, origin: str):
        text = text.strip()
        self._ed25519: Ed25519PrivateKey | None = None
        self._hmac: bytes | None = None
        try:
            if text.startswith(_ED25519.decode()):
                self._ed25519 = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text[len(_ED25519):]))
            else:
                self._hmac = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(f"{origin}: expected 'ed25519:' and 64 hex digits (as `lifecycle store add` "
                              "writes it)") from None

    def __repr__(self) -> str:  # never the key itself
        return f"AckSigner({'ed25519' if self._ed25519 else 'legacy hmac'})"

    @classmethod
    def generate(cls) -> AckSigner:
        return cls(_ED25519.decode() + Ed25519PrivateKey.generate().private_bytes_raw().hex(), "generated")

    @property
    def text(self) -> str:
        """The key file's content."""
        if self._ed25519 is None:
            raise ConfigError("a legacy HMAC key has no signing key text")
        return _ED25519.decode() + self._ed25519.private_bytes_raw().hex()

    @property
    def public(self) -> bytes | None:
        if self._ed25519 is None:
            return None
        return self._ed25519.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def receipt_headers(self, ack: dict[str, Any]) -> list[tuple[str, bytes]]:
        """The signed receipt of an ErasureAck (none with a legacy HMAC key)."""
        if self._ed25519 is None:
            return []
        return [(RECEIPT_HEADER, _ED25519 + base64.b64encode(self._ed25519.sign(receipt_statement(ack))))]

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        if self._ed25519 is not None:
            return [(SIGNATURE_HEADER, _ED25519 + base64.b64encode(self._ed25519.sign(value)))]
        assert self._hmac is not None
        return sign_ack(self._hmac, value)


def ensure_table(conn: Any) -> None:
    """Create (or bring up to date) store_keys; a role that may only read or write it may not."""
    exists = conn.execute("SELECT to_regclass('store_keys')").fetchone()[0] is not None
    has_public = exists and conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'store_keys' AND column_name = 'public_key'"
    ).fetchone() is not None
    if not has_public:
        conn.execute(DDL)


def register_public_key(conn: Any, store: str, public: bytes, *, replace: bool) -> None:
    """Keep a store's public key. A store that already has one keeps it unless ``replace``; a
    legacy HMAC key is dropped once the store has a signing key."""
    check_store_name(store)
    row = conn.execute("SELECT public_key FROM store_keys WHERE store = %s", (store,)).fetchone()
    if row is not None and row[0] is not None and not replace:
        raise ConfigError(f"store {store!r} has a signing key already; `lifecycle store add {store} --rotate` "
                          "replaces it (the old one is refused from then on)")
    conn.execute("INSERT INTO store_keys (store, public_key, wrapped) VALUES (%s, %s, NULL) ON CONFLICT (store) "
                 "DO UPDATE SET public_key = EXCLUDED.public_key, wrapped = NULL, created_at = now()",
                 (store, public))


def register_store(conn: Any, store: str, *, replace: bool = False) -> AckSigner:
    """A new key pair for ``store``: the public half kept, the private half returned for its owner
    (the pipeline keeps no copy)."""
    ensure_table(conn)
    signer = AckSigner.generate()
    assert signer.public is not None
    register_public_key(conn, store, signer.public, replace=replace)
    return signer


def load_store_keys(conn: Any, wrapper: KeyWrapper | None) -> dict[str, StoreKey]:
    """Every store's key as the pipeline checks it (legacy HMAC keys unwrapped with ``wrapper``)."""
    ensure_table(conn)
    out = {}
    for store, wrapped, public in conn.execute("SELECT store, wrapped, public_key FROM store_keys").fetchall():
        legacy = None
        if public is None and wrapped is not None and wrapper is not None:
            legacy = wrapper.unwrap(store, "store-key", "acknowledgements", bytes(wrapped))
        out[store] = StoreKey(bytes(public) if public is not None else None, legacy)
    return out


def sign_ack(key: bytes, value: bytes) -> list[tuple[str, bytes]]:
    """The headers of an ack signed with a legacy HMAC key."""
    return [(SIGNATURE_HEADER, hmac.new(key, value, hashlib.sha256).hexdigest().encode())]


def ack_signature_problem(keys: dict[str, StoreKey], store: str, value: bytes,
                          headers: Iterable[tuple[str, bytes]] | None) -> tuple[str, str] | None:
    """(reason, message) when the ack is not signed by the store it names; None when it is."""
    given = [v for k, v in headers or [] if k == SIGNATURE_HEADER]
    if not given:
        return "unsigned_ack", "no lifecycle.signature header"
    key = keys.get(store)
    if key is None or (key.public is None and key.legacy is None):
        return "bad_signature", "no key is registered for the store this ack names"
    if len(given) != 1:
        return "bad_signature", "more than one signature"
    if given[0].startswith(_ED25519):
        if key.public is None:
            return "bad_signature", "the store this ack names has no signing key registered"
        try:
            Ed25519PublicKey.from_public_bytes(key.public).verify(
                base64.b64decode(given[0][len(_ED25519):], validate=True), value)
        except (ValueError, binascii.Error, InvalidSignature):
            return "bad_signature", "signature does not match the key of the store this ack names"
        return None
    if key.legacy is None:
        return "bad_signature", "an HMAC signature from a store that has a signing key (refused since its migration)"
    if not hmac.compare_digest(given[0], hmac.new(key.legacy, value, hashlib.sha256).hexdigest().encode()):
        return "bad_signature", "signature does not match the key of the store this ack names"
    return None
