"""Certificates of erasure an auditor checks offline: the proof of one completed erasure, signed
with the pipeline's Ed25519 key (`cryptography`), and the check that needs nothing of the
pipeline but the file (and, to be sure of the signer, the published public key).

A certificate file is one line of canonical JSON (keys sorted, no spaces):
``{"certificate": {...}, "public_key": "<base64 raw Ed25519>", "signature": "<base64>"}``, where
the signature covers the canonical JSON of ``certificate``. `verify` refuses a file that is not
in exactly that form, so that a change of any byte is a refusal, not just a change of meaning.

The signing key: ``LIFECYCLE_PROOF_KEY_FILE``, else ``<state>/secrets/proof.key`` (the raw
private key, hex, mode 0600), generated on first use; `lifecycle proof key` prints the public key
to publish.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError
from lifecycle.core.keys import load_ed25519_key
from lifecycle.core.storekeys import fingerprint, verify_receipt

__all__ = ["proof_key_file", "load_signing_key", "record", "public_key_text", "certificate", "sign", "verify",
           "canonical", "ProofRefused", "SignerUnverified", "verify_stores", "FORMAT_V1"]

FORMAT = "lifecycle-erasure-certificate/2"
FORMAT_V1 = "lifecycle-erasure-certificate/1"  # before issue 26: no store receipts; still verifies as v1


class ProofRefused(LifecycleError):
    """A certificate that does not verify; the message says why."""


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def proof_key_file(settings: Settings) -> Path:
    return settings.proof_key_file or settings.state_dir / "secrets" / "proof.key"


def load_signing_key(settings: Settings, *, create: bool = True) -> Ed25519PrivateKey:
    path = proof_key_file(settings)
    return load_ed25519_key(path, create=create, missing=f"no proof signing key at {path}", what="proof signing key")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_text(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = _raw_public(key.public_key())
    return {"algorithm": "Ed25519", "public_key": base64.b64encode(raw).decode(),
            "fingerprint": hashlib.sha256(raw).hexdigest()[:16],
            "pem": key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()}


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def certificate(conn: Any, settings: Settings, request_id: str) -> dict[str, Any]:
    """The certificate body of a completed erasure (``conn``: sync psycopg), from its proof row."""
    row = conn.execute("SELECT request_id, account_hash, reason, opened_at, completed_at, keys_destroyed_at, "
                       "keys_kept, stores, state, regressions, regressed_at, last_verified_at, replays, replayed_at "
                       "FROM erasure_proofs WHERE request_id::text = %s", (request_id,)).fetchone()
    if row is None:
        raise LifecycleError(f"no completed erasure {request_id} (only a complete one has a proof)")
    (rid, account_hash, reason, opened, completed, destroyed, kept, stores, state, regressions, regressed, last,
     replays, replayed) = row
    if state != "complete":
        raise LifecycleError(f"erasure {request_id} is {state}: a later check found data again, and the erasure "
                             "is open until every store has erased and verified again (docs/erasure.md)")
    stores = list(stores or [])
    backups = _backups(conn, stores, completed)
    return {
        "format": FORMAT,
        "request_id": str(rid),
        "account_hash": account_hash,  # HMAC-SHA256 under the pipeline's hash key: no identifier
        "reason": reason,
        "opened_at": _iso(opened),
        "completed_at": _iso(completed),
        "keys_destroyed_at": _iso(destroyed),
        "keys_kept_for_legal_hold": sorted(kept or []),
        "stores": [{"store": s["store"], "status": s["status"], "items_erased": s["items_erased"],
                    "acknowledged_at": _iso(dt.datetime.fromtimestamp(s["acknowledged_at"] / 1000, dt.UTC))
                    if s.get("acknowledged_at") else None,
                    "verified_at": _iso(dt.datetime.fromtimestamp(s["verified_at"] / 1000, dt.UTC))
                    if s.get("verified_at") else None,
                    # The store's own word, signed with its key (no account id in it): checked offline.
                    "store_key": s.get("store_key") or "legacy-hmac",
                    "ack_receipt": _receipt(s.get("ack_statement"), s.get("ack_signature")),
                    "verify_receipt": _receipt(s.get("verify_statement"), s.get("verify_signature")),
                    "backups": backups[s["store"]]}
                   for s in stores],
        # Every backup taken before a store erased may still hold the subject until it expires:
        # the latest such date, or None when a store declared no backup retention (listed).
        "backups_expire_by": None if any(b["retention_days"] is None for b in backups.values()) else
        max((b["expire_by"] for b in backups.values()), default=None),
        "backups_undeclared": sorted(s for s, b in backups.items() if b["retention_days"] is None),
        "last_verified_at": _iso(last),
        "regressions": regressions,
        "last_regressed_at": _iso(regressed),
        "replays": replays,  # a store restored from a backup, found holding the data and erased again
        "last_replayed_at": _iso(replayed),
        "items_erased": sum(int(s["items_erased"]) for s in stores),
        "policy_version": hashlib.sha256(settings.retention_policy.read_bytes()).hexdigest()[:16],
        "deadline_extension": _extension(conn, rid),  # GDPR Art. 12(3), or None
        "issued_at": _iso(dt.datetime.now(dt.UTC)),
    }


def _backups(conn: Any, stores: list[dict[str, Any]], completed: dt.datetime) -> dict[str, dict[str, Any]]:
    """Per store: its declared backup retention and the date its last backup holding the subject
    expires (the day it erased, plus the retention)."""
    declared: dict[str, Any] = {}
    has_column = conn.execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'erasure_stores' "
                              "AND column_name = 'backup_days'").fetchone() is not None
    if has_column:
        declared = dict(conn.execute("SELECT store, backup_days FROM erasure_stores").fetchall())
    out = {}
    for s in stores:
        days = declared.get(s["store"])
        erased = dt.datetime.fromtimestamp(s["acknowledged_at"] / 1000, dt.UTC) if s.get("acknowledged_at") \
            else completed
        out[s["store"]] = {"retention_days": days,
                           "expire_by": _iso(erased + dt.timedelta(days=days)) if days is not None else None}
    return out


def _extension(conn: Any, rid: Any) -> dict[str, Any] | None:
    """The request's deadline extension (streams/access/extensions.py), if it had one."""
    if conn.execute("SELECT to_regclass('request_extensions')").fetchone()[0] is None:
        return None
    row = conn.execute("SELECT months, reason, requested_by, extended_at, previous_deadline, deadline "
                       "FROM request_extensions WHERE request_id = %s", (rid,)).fetchone()
    if row is None:
        return None
    months, reason, by, at, previous, deadline = row
    return {"months": months, "reason": reason, "requested_by": by, "extended_at": _iso(at),
            "previous_deadline": _iso(previous), "deadline": _iso(deadline)}


def _receipt(statement: str | None, signature: str | None) -> dict[str, str] | None:
    return {"statement": statement, "signature": signature} if statement and signature else None


def sign(body: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    """The certificate file's bytes."""
    return canonical({"certificate": body, "public_key": base64.b64encode(_raw_public(key.public_key())).decode(),
                      "signature": base64.b64encode(key.sign(canonical(body))).decode()}) + b"\n"


class SignerUnverified(ProofRefused):
    """The certificate is intact and signed by the key it carries, but no trusted key was given:
    a key inside the file proves nothing about who signed it (docs/security.md)."""


def record(conn: Any, request_id: str, data: bytes) -> None:
    """Keep the certificate as issued (the console hands it out; the newest issue of an erasure
    replaces an older one). A database without the table (before the worker's first start, or a
    role that may not write it) keeps nothing: the file is the certificate."""
    import psycopg

    try:
        with conn.transaction():
            conn.execute("INSERT INTO erasure_certificates (request_id, body) VALUES (%s, %s) ON CONFLICT (request_id) "
                         "DO UPDATE SET body = EXCLUDED.body, issued_at = now()", (request_id, data))
    except psycopg.Error:
        pass


def verify(data: bytes, public_key: str | None = None, *, trust_embedded: bool = False) -> dict[str, Any]:
    """The certificate in ``data`` if it verifies against ``public_key`` (base64: the published
    key); SignerUnverified when no key is given (unless ``trust_embedded``, for checks of the
    file's own integrity only), ProofRefused otherwise."""
    try:
        doc = json.loads(data)
        body, key_text, signature = doc["certificate"], doc["public_key"], doc["signature"]
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(key_text, validate=True))
        sig = base64.b64decode(signature, validate=True)
    except (ValueError, KeyError, TypeError):
        raise ProofRefused("not a certificate of erasure (unreadable)") from None
    if (canonical(doc) + b"\n" != data or base64.b64encode(sig).decode() != signature
            or base64.b64encode(_raw_public(key)).decode() != key_text):  # base64 has spare bits: one form only
        raise ProofRefused("the file is not exactly as it was signed (a byte was changed, added or removed)")
    if public_key is not None and key_text != public_key:
        raise ProofRefused("signed by another key than the one given")
    try:
        key.verify(sig, canonical(body))
    except InvalidSignature:
        raise ProofRefused("the signature does not match the certificate") from None
    if not isinstance(body, dict) or body.get("format") not in (FORMAT, FORMAT_V1):
        raise ProofRefused("not a certificate of erasure (unknown format)")
    if public_key is None and not trust_embedded:
        raise SignerUnverified("the signature matches the key inside the file, but that key is not trusted: "
                               "give the pipeline's published key (--public-key FILE, or LIFECYCLE_PROOF_TRUST_FILE)")
    return body


def verify_stores(body: dict[str, Any], store_keys: dict[str, str] | None) -> list[str]:
    """Check each store's own signed receipts in a v2 certificate against the stores' published keys
    (``store -> base64 raw Ed25519 key``); returns one line per store. ProofRefused when a receipt is
    altered, signed by another key (the pipeline's included), or disagrees with the certificate;
    SignerUnverified when a store's key was not given or the store signs with a legacy shared key."""
    if body.get("format") == FORMAT_V1:
        return ["a v1 certificate: it carries no store receipts (issued before stores signed their own)"]
    if store_keys is None:
        raise SignerUnverified("the stores' receipts are not checked: give the stores' published keys "
                               "(--store-keys FILE, as `lifecycle store keys` prints them)")
    lines = []
    for entry in body.get("stores") or []:
        store = entry.get("store")
        if entry.get("store_key") == "legacy-hmac" or not entry.get("ack_receipt"):
            raise SignerUnverified(f"store {store!r} signed with a legacy shared key: its word cannot be checked "
                                   "offline (`lifecycle store add NAME --rotate` gives it a key of its own)")
        given = store_keys.get(store)
        if given is None:
            raise SignerUnverified(f"no published key given for store {store!r}")
        try:
            public = base64.b64decode(given, validate=True)
        except ValueError:
            raise ProofRefused(f"the key given for store {store!r} is not base64") from None
        if fingerprint(public) != entry.get("store_key"):
            raise ProofRefused(f"store {store!r}: the certificate names another key than the one published")
        for kind, action in (("ack_receipt", "erase"), ("verify_receipt", "verify")):
            _check_receipt(entry, kind, action, public, str(body.get("request_id")))
        lines.append(f"store {store}: its own signature over its erase and verify receipts ({fingerprint(public)})")
    return lines


def _check_receipt(entry: dict[str, Any], kind: str, action: str, public: bytes, request_id: str) -> None:
    store, receipt = entry.get("store"), entry.get(kind)
    if not isinstance(receipt, dict):
        raise ProofRefused(f"store {store!r}: no {kind.replace('_', ' ')}")
    statement, signature = str(receipt.get("statement", "")), str(receipt.get("signature", ""))
    if not verify_receipt(public, statement.encode(), signature.encode()):
        raise ProofRefused(f"store {store!r}: the {kind.replace('_', ' ')} is not signed by the store's key")
    try:
        said = json.loads(statement)
    except ValueError:
        raise ProofRefused(f"store {store!r}: the {kind.replace('_', ' ')} is unreadable") from None
    if said.get("store") != store or said.get("action") != action or said.get("request_id") != request_id or \
            (action == "erase" and (said.get("status") != entry.get("status")
                                    or said.get("items_erased") != entry.get("items_erased"))) or \
            (action == "verify" and said.get("items_found") != 0):
        raise ProofRefused(f"store {store!r}: the certificate says otherwise than the store's signed {action} receipt")
