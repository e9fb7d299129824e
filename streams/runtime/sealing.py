"""Where the pipeline seals and opens personal data (docs/crypto-shredding.md): input events as
the intake reads them, events accepted over HTTP, and dead letters. Output records are sealed as
they are queued (streams/runtime/context.py).

Subjects: an input event's is its partitioning key (account, else visitor); an output record's
is its Kafka key. A dead letter's original bytes are sealed under the key of the subject its
record key names, so the subject's erasure reaches them; a record key that names no subject is
sealed too, with the original bytes, under the key of the dead-letter period (as long as the
dead-letters retention), destroyed once every letter of that period is past its retention.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from lifecycle.core.crypto import ERASED, PREFIX, Forged
from lifecycle.core.datakeys import DataKeys
from lifecycle.core.policy import Policy
from lifecycle.schemas.catalog import RecordType
from lifecycle.schemas.personal import key_pairs, seal, tokens_of, unseal
from lifecycle.schemas.validate import subject_key
from lifecycle.streams.runtime.database import Database

__all__ = ["open_events", "seal_events", "presealed_problems", "seal_letter", "letter_subject", "period_subject",
           "LETTER_CATEGORY", "destroy_past_letter_keys", "open_letter"]

LETTER_CATEGORY = "dead_letters"
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,255}$")


async def open_events(db: Database, keys: DataKeys, items: list[tuple[RecordType, dict[str, Any]]]
                      ) -> tuple[list[dict[str, Any] | Forged], int]:
    """Each event's value with its personal fields opened, or the Forged that refuses it; and how
    many personal fields arrived in clear (a producer that does not seal)."""
    tokens = [t for record, value in items for t in tokens_of(record, value)]
    if keys.opening_missing(tokens):
        await db.run("data keys", lambda conn: keys.load(conn, tokens))
    out: list[dict[str, Any] | Forged] = []
    clear = 0
    for record, value in items:
        try:
            opened, n = unseal(keys, record, value, subject_key(record, value))
            clear += n
            out.append(opened)
        except Forged as exc:
            out.append(exc)
    return out, clear


async def presealed_problems(db: Database, keys: DataKeys, items: list[tuple[RecordType, dict[str, Any]]]
                             ) -> list[tuple[int, str]]:
    """(index, field) of every personal value that looks sealed (``lc1:``) but does not open as that
    field of its event's subject under a key of that subject and category. Sealing leaves a sealed
    value as it is, so a made-up one would otherwise pass in clear where no erasure reaches it."""
    found = [(i, name, category, value[name]) for i, (record, value) in enumerate(items)
             for name, category in record.personal
             if isinstance(value.get(name), str) and value[name].startswith(PREFIX)]
    if not found:
        return []
    tokens = [token for *_, token in found]
    if keys.opening_missing(tokens):
        await db.run("data keys", lambda conn: keys.load(conn, tokens))
    bad = []
    for index, name, category, token in found:
        record, value = items[index]
        try:
            keys.open(token, subject_key(record, value), name, category)
        except Forged:
            bad.append((index, name))
    return bad


async def seal_events(conn: psycopg.AsyncConnection[Any], keys: DataKeys,
                      items: list[tuple[RecordType, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The events with their personal fields sealed, keys created in ``conn``'s transaction."""
    pairs = [p for record, value in items for p in key_pairs(record, subject_key(record, value))]
    if not pairs:
        return [value for _, value in items]
    prepared = await keys.prepare(conn, pairs)
    out = []
    for record, value in items:
        subject = subject_key(record, value)
        out.append(seal(keys.keys_of(prepared, subject), record, value, subject))
    return out


def letter_subject(key: bytes | None) -> str | None:
    """The subject a record key names, if it looks like an identifier (not an address or a blob)."""
    if key is None:
        return None
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return None
    return text if _SUBJECT.match(text) else None


def period_subject(policy: Policy, now_ms: int, back: int = 0) -> str:
    window = policy.categories[LETTER_CATEGORY].window.approx_ms()
    return f"dead-letters/{now_ms // window - back}"


async def seal_letter(db: Database, keys: DataKeys, policy: Policy, now_ms: int, key: bytes | None,
                      value: bytes | None) -> tuple[bytes | None, bytes | None, str]:
    """(record key, original bytes, sealed_for) as a dead letter keeps them."""
    subject = letter_subject(key)
    sealed_for = "key" if subject is not None else period_subject(policy, now_ms)
    owner = subject if subject is not None else sealed_for

    # Its own transaction, committed before the letter is sent: a letter never names a key that is not kept.
    prepared = await db.run("data keys", lambda conn: keys.prepare(conn, [(owner, LETTER_CATEGORY)]))
    if value is not None:
        value = keys.seal(prepared, value, owner, LETTER_CATEGORY, "original_value").encode()
    if subject is None and key is not None:
        key = keys.seal(prepared, key, owner, LETTER_CATEGORY, "original_key").encode()
    return key, value, sealed_for


async def destroy_past_letter_keys(conn: psycopg.AsyncConnection[Any], keys: DataKeys, policy: Policy,
                                   now_ms: int) -> None:
    """Destroy the keys of dead-letter periods whose every letter is past the retention: a letter of
    period p lives at most until the end of p + 1, so at period q the keys of q - 2 and before go."""
    await keys.destroy(conn, [period_subject(policy, now_ms, back) for back in range(2, 8)], [LETTER_CATEGORY])


def open_letter(conn: psycopg.Connection[Any], keys: DataKeys, key: bytes | None, value: bytes | None,
                sealed_for: str | None) -> tuple[bytes | None, bytes | None] | None:
    """A dead letter's original (key, bytes) opened (``conn``: sync, for the CLI); None once its
    key is destroyed. A letter written before sealing existed has no ``sealed_for`` and is as it was."""
    if sealed_for is None:
        return key, value
    subject = sealed_for
    if sealed_for == "key":
        subject = (key or b"").decode(errors="replace")
    tokens = [t.decode(errors="replace") for t in (value, key if sealed_for != "key" else None) if t is not None]
    keys.load_sync(conn, tokens)
    if value is not None:
        value = keys.open_bytes(value.decode(errors="replace"), subject, "original_value", LETTER_CATEGORY)
        if value == ERASED.encode():
            return None
    if sealed_for != "key" and key is not None:
        key = keys.open_bytes(key.decode(errors="replace"), subject, "original_key", LETTER_CATEGORY)
    return key, value
