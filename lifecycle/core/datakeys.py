"""Data keys: one AES-256 key per subject (an account, or a visitor) and category of personal
data, created on first use, kept in PostgreSQL wrapped by the master key, destroyed when the
subject is erased (docs/crypto-shredding.md).

The table holds no identifier: a key is found by the keyed hash of its subject
(lifecycle/core/keys.py), and a sealed value names its key by ``kid``. A destroyed key keeps its
row with ``wrapped`` NULL, so the subject's key is never created again and what was sealed under
it reads as ``ERASED``.

A live key records the day it was last fetched to seal with (``used_on``, on the pipeline's day:
the later of the wall clock's and the event clock's). A key of a category kept only in the log that
nobody sealed with for longer than the log keeps a value is deleted, row and all
(streams/ingest/quietkeys.py): nothing sealed under it is left anywhere, and a subject who comes
back gets a new key. A key fetched on an earlier day is marked used again (``_TOUCH``) before it
seals anything, and is cached only once that mark has committed; a quiet key is first marked
retiring and deleted only after every process's cache has let go of it (``_QUIET``).

Unwrapped keys are cached in memory, at most ``cache_s`` seconds (``LIFECYCLE_DATA_KEY_CACHE_S``,
30 by default) and ``max_entries`` keys: the bound on how long a process can still open an erased
subject's values after the erasure opened. A key created inside a transaction that has not
committed yet serves that transaction only and is never cached, so a rollback leaves nothing
behind that could seal a value under a key no one can find.

The SQL runs on a caller's connection, sync (the emitter SDK, the CLI) or async (the worker);
the rest is plain computation.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.core.config import Settings
from lifecycle.core.crypto import ERASED, PREFIX, Forged, KeyWrapper, load_master_key, new_kid, open_with, seal_with
from lifecycle.core.crypto import split as split_sealed
from lifecycle.core.errors import ConfigError
from lifecycle.core.keys import Keyring, load_keyring

__all__ = ["DataKeys", "DataKey", "DDL", "Prepared", "open_data_keys", "check_master_key"]

DDL = """
CREATE TABLE IF NOT EXISTS data_keys (
    kid          text PRIMARY KEY,
    subject_hash text NOT NULL,
    category     text NOT NULL,
    wrapped      bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    UNIQUE (subject_hash, category)
);
-- The pipeline's event clock (streams/runtime/schema.sql defines it too: whichever process starts
-- first); a key's day of use is the later of its day and the wall clock's.
CREATE TABLE IF NOT EXISTS clock_state (
    id            int PRIMARY KEY CHECK (id = 1),
    event_time_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS master_key_check (
    id         int PRIMARY KEY CHECK (id = 1),
    kid        text NOT NULL,
    wrapped    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""
# The pipeline's day: the event clock runs ahead of the wall clock in tests and the demo, and the
# wall clock ahead of the event clock when no event comes; the later one never makes a key look older.
_TODAY = """GREATEST((now() AT TIME ZONE 'UTC')::date,
    (SELECT (to_timestamp(event_time_ms / 1000.0) AT TIME ZONE 'UTC')::date FROM clock_state WHERE id = 1))"""
# Added to a table from before the quiet-key sweep; run only when missing (an ALTER TABLE locks the
# table whole even when it changes nothing, and every process checks the schema at start).
_USED_ON = """
ALTER TABLE data_keys ADD COLUMN IF NOT EXISTS used_on date NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date;
ALTER TABLE data_keys ADD COLUMN IF NOT EXISTS retiring_at timestamptz;
CREATE INDEX IF NOT EXISTS data_keys_quiet ON data_keys (used_on) WHERE wrapped IS NOT NULL AND retiring_at IS NULL;
CREATE INDEX IF NOT EXISTS data_keys_retiring ON data_keys (retiring_at) WHERE retiring_at IS NOT NULL;
"""
_HAS_USED_ON = "SELECT 1 FROM pg_attribute WHERE attrelid = 'data_keys'::regclass AND attname = 'retiring_at'"
_GET_OR_CREATE = """
WITH today AS (SELECT """ + _TODAY + """ AS day),
new AS (
    INSERT INTO data_keys (kid, subject_hash, category, wrapped, destroyed_at, used_on)
    SELECT k, h, c, w, CASE WHEN w IS NULL THEN now() END, (SELECT day FROM today)
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::bytea[]) AS t(k, h, c, w)
    ON CONFLICT (subject_hash, category) DO NOTHING
    RETURNING kid, subject_hash, category, wrapped, true AS created)
-- created: by this transaction (this statement or an earlier one), so not to be cached before it commits;
-- stale: a live key last used on an earlier day, to be marked used (_TOUCH) before it seals
SELECT kid, subject_hash, category, wrapped, created, false FROM new
UNION ALL
SELECT d.kid, d.subject_hash, d.category, d.wrapped,
       d.xmin::text::bigint = pg_current_xact_id()::text::bigint %% 4294967296,
       d.wrapped IS NOT NULL AND d.used_on < (SELECT day FROM today) FROM data_keys d
JOIN unnest(%b::text[], %b::text[]) AS w(h, c) ON d.subject_hash = w.h AND d.category = w.c
"""
# Locks in kid order, so that two processes marking the same keys never deadlock; a key the
# quiet-key sweep deleted meanwhile is not returned, and is created anew.
_TOUCH = """
UPDATE data_keys d SET used_on = """ + _TODAY + """, retiring_at = NULL
FROM (SELECT kid FROM data_keys WHERE kid = ANY(%b::text[]) ORDER BY kid FOR UPDATE) s
WHERE d.kid = s.kid RETURNING d.kid
"""
# A subject erased under an earlier key of the ring (before `keys rotate`) has its destroyed rows
# filed under that key's hash: a key for its current hash is created destroyed, never live.
_DESTROYED_UNDER = ("SELECT subject_hash, category FROM data_keys WHERE subject_hash = ANY(%b::text[]) "
                    "AND wrapped IS NULL")
_BY_KID = ("SELECT kid, subject_hash, category, wrapped, wrapped IS NOT NULL AND used_on < " + _TODAY +
           " FROM data_keys WHERE kid = ANY(%b::text[])")
# The quiet keys, in two steps a grace period of wall time apart: marked retiring, then deleted if
# nobody fetched them since (a fetch marks a key used again, and clears the mark). A process seals
# from its cache without fetching for at most its cache time, so a key cached before the mark is out
# of every cache by the end of the grace, whatever the event clock did meanwhile. A key being marked
# used is skipped, never waited for. Each step reads its own partial index: the marked keys do not
# slow the search for the next ones.
_QUIET = """
SELECT kid FROM data_keys WHERE wrapped IS NOT NULL AND category = ANY(%(categories)b::text[])
    AND used_on < %(before)s AND {retiring} LIMIT %(limit)s FOR UPDATE SKIP LOCKED
"""
_MARK_RETIRING = ("UPDATE data_keys SET retiring_at = now() WHERE kid IN (" +
                  _QUIET.format(retiring="retiring_at IS NULL") + ")")
_DELETE_RETIRED = ("DELETE FROM data_keys WHERE kid IN (" +
                   _QUIET.format(retiring="retiring_at < now() - %(grace_s)s * interval '1 second'") +
                   ") RETURNING kid, subject_hash, category")
# An upsert, not an UPDATE: it waits for a transaction still creating one of these keys, and leaves
# a destroyed row for every category, so that none of the subject's keys is ever created again.
_DESTROY = """
INSERT INTO data_keys (kid, subject_hash, category, wrapped, destroyed_at)
SELECT k, h, c, NULL, now() FROM unnest(%b::text[], %b::text[], %b::text[]) AS t(k, h, c)
ON CONFLICT (subject_hash, category) DO UPDATE SET wrapped = NULL,
    destroyed_at = COALESCE(data_keys.destroyed_at, EXCLUDED.destroyed_at)
RETURNING kid
"""
_CANARY_SUBJECT = "master-key-check"


@dataclasses.dataclass
class DataKey:
    kid: str
    aead: AESGCM | None  # None: destroyed
    raw: bytes | None  # what /v1/keys hands to a holder of the keys token
    at: float
    subject_hash: str = ""  # whose key it is: opening checks the value's subject and category against these
    category: str = ""


Prepared = dict[tuple[str, str], DataKey]  # (subject hash, category) -> its key


class DataKeys:
    """Seal and open personal values; the keys they need are fetched in batches first."""

    def __init__(self, wrapper: KeyWrapper, keyring: Keyring, *, cache_s: float = 30, max_entries: int = 100_000,
                 now: Callable[[], float] = time.monotonic):
        self.wrapper = wrapper
        self.keyring = keyring
        self.cache_s = cache_s
        self.max_entries = max_entries
        self._now = now
        self._by_kid: collections.OrderedDict[str, DataKey] = collections.OrderedDict()
        self._by_subject: collections.OrderedDict[tuple[str, str], DataKey] = collections.OrderedDict()
        self._hashes: dict[str, str] = {}

    # -- the cache ---------------------------------------------------------------------------
    def hash_of(self, subject: str) -> str:
        """The subject's keyed hash under the current key (memoised: a batch asks it many times)."""
        found = self._hashes.get(subject)
        if found is None:
            if len(self._hashes) >= self.max_entries:
                self._hashes.clear()
            found = self._hashes[subject] = self.keyring.pseudonym(subject)
        return found

    def _get(self, cache: collections.OrderedDict[Any, DataKey], key: Any) -> DataKey | None:
        entry = cache.get(key)
        if entry is None or self._now() - entry.at > self.cache_s:
            if entry is not None:
                del cache[key]
            return None
        cache.move_to_end(key)
        return entry

    def _put(self, cache: collections.OrderedDict[Any, DataKey], key: Any, entry: DataKey) -> None:
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > self.max_entries:
            cache.popitem(last=False)

    def forget(self, kids: Iterable[str], pairs: Iterable[tuple[str, str]]) -> None:
        """Drop keys from this process's cache (the erasure that destroyed them calls it)."""
        for kid in kids:
            self._by_kid.pop(kid, None)
        for pair in pairs:
            self._by_subject.pop(pair, None)

    def _unwrap(self, kid: str, subject_hash: str, category: str, wrapped: bytes | None) -> DataKey:
        raw = self.wrapper.unwrap(kid, subject_hash, category, bytes(wrapped)) if wrapped else None
        return DataKey(kid, AESGCM(raw) if raw else None, raw, self._now(), subject_hash, category)

    # -- keys to seal with -------------------------------------------------------------------
    def _from_cache(self, pairs: Iterable[tuple[str, str]]) -> tuple[Prepared, dict[tuple[str, str], str]]:
        """(what the cache holds, the (subject hash, category) pairs it lacks)."""
        found: Prepared = {}
        missing: dict[tuple[str, str], str] = {}
        for subject, category in pairs:
            key = (self.hash_of(subject), category)
            if key in found or key in missing:
                continue
            entry = self._get(self._by_subject, key)
            if entry is None:
                missing[key] = subject
            else:
                found[key] = entry
        return found, missing

    def _earlier_hashes(self, missing: dict[tuple[str, str], str]) -> dict[str, str]:
        """The hashes of the missing keys' subjects under the ring's earlier keys -> current hash."""
        return {old: h for (h, _), subject in missing.items() for old in self.keyring.candidates(subject) if old != h}

    def _create_params(self, missing: dict[tuple[str, str], str], earlier: dict[str, str],
                       destroyed: Iterable[tuple[str, str]]) -> tuple[list[Any], ...]:
        """Parameters of _GET_OR_CREATE; ``destroyed``: (earlier hash, category) rows found
        destroyed, whose subject's new key is created destroyed too."""
        dead = {(earlier[old], c) for old, c in destroyed if old in earlier}
        kids: list[str] = []
        hashes: list[str] = []
        cats: list[str] = []
        wrapped: list[bytes | None] = []
        for h, c in sorted(missing):  # one lock order for every writer
            kid = new_kid()
            kids.append(kid)
            hashes.append(h)
            cats.append(c)
            wrapped.append(None if (h, c) in dead else self.wrapper.wrap(kid, h, c, secrets.token_bytes(32)))
        return kids, hashes, cats, wrapped, hashes, cats

    def _take(self, rows: list[tuple[Any, ...]], committed: bool, into: Prepared) -> list[str]:
        """Put the rows of _GET_OR_CREATE in ``into`` (and the cache, where safe); returns the kids
        of the stale ones, to be marked used before they seal."""
        stale_kids = []
        for kid, h, c, wrapped, created, stale in rows:
            entry = self._unwrap(kid, h, c, wrapped)
            into[(h, c)] = entry
            if stale:
                stale_kids.append(kid)
            if (committed or not created) and not stale:
                self._put(self._by_subject, (h, c), entry)
                self._put(self._by_kid, kid, entry)
        return stale_kids

    def _kept(self, found: Prepared, stale: list[str], touched: Iterable[Any], committed: bool) -> None:
        """Drop from ``found`` the stale keys the quiet-key sweep deleted meanwhile (created anew on
        the next round); cache the ones marked used once that mark is committed."""
        alive = {row[0] for row in touched}
        stale_set = set(stale)
        for pair, entry in list(found.items()):
            if entry.kid in stale_set:
                if entry.kid not in alive:
                    del found[pair]
                elif committed:
                    self._put(self._by_subject, pair, entry)
                    self._put(self._by_kid, entry.kid, entry)

    def prepare_sync(self, conn: Any, pairs: Iterable[tuple[str, str]]) -> Prepared:
        """The keys to seal (subject, category) pairs with, each cached, found or created, on a
        connection in autocommit (what it creates is durable at once)."""
        found, missing = self._from_cache(pairs)
        for _ in range(3):  # a key another transaction created since this statement's snapshot: once more
            if not missing:
                return found
            earlier = self._earlier_hashes(missing)
            destroyed = conn.execute(_DESTROYED_UNDER, (list(earlier),)).fetchall() if earlier else []
            rows = conn.execute(_GET_OR_CREATE, self._create_params(missing, earlier, destroyed)).fetchall()
            stale = self._take(rows, True, found)
            if stale:
                self._kept(found, stale, conn.execute(_TOUCH, (stale,)).fetchall(), True)
            missing = {k: v for k, v in missing.items() if k not in found}
        raise RuntimeError("data keys could not be created")

    async def prepare(self, conn: Any, pairs: Iterable[tuple[str, str]]) -> Prepared:
        """``prepare_sync`` inside the caller's transaction: keys it creates, or marks used, serve
        this transaction only (what it returns) and are cached once found again after it committed."""
        found, missing = self._from_cache(pairs)
        for _ in range(3):
            if not missing:
                return found
            earlier = self._earlier_hashes(missing)
            destroyed: list[Any] = []
            if earlier:
                destroyed = await (await conn.execute(_DESTROYED_UNDER, (list(earlier),))).fetchall()
            cur = await conn.execute(_GET_OR_CREATE, self._create_params(missing, earlier, destroyed))
            stale = self._take(await cur.fetchall(), False, found)
            if stale:
                self._kept(found, stale, await (await conn.execute(_TOUCH, (stale,))).fetchall(), False)
            missing = {k: v for k, v in missing.items() if k not in found}
        raise RuntimeError("data keys could not be created")

    def keys_of(self, prepared: Prepared, subject: str) -> Callable[[str], DataKey]:
        """The subject's prepared key of a category (what schemas.personal.seal takes)."""
        subject_hash = self.hash_of(subject)
        return lambda category: prepared[(subject_hash, category)]

    def seal(self, prepared: Prepared, value: str | bytes, subject: str, category: str, field: str) -> str:
        """The sealed form of ``value`` with a prepared key; ERASED when the subject's key is destroyed."""
        key = prepared[(self.hash_of(subject), category)]
        if key.aead is None:
            return ERASED
        return seal_with(key.aead, key.kid, subject, field, value.encode() if isinstance(value, str) else value)

    # -- keys to open with -------------------------------------------------------------------
    def opening_missing(self, tokens: Iterable[object]) -> list[str]:
        """The kids of the sealed values among ``tokens`` whose keys are not cached."""
        out: set[str] = set()
        for token in tokens:
            if isinstance(token, str) and token.startswith(PREFIX):
                kid = token[len(PREFIX):len(PREFIX) + 22]
                if kid not in out and self._get(self._by_kid, kid) is None:
                    out.add(kid)
        return sorted(out)

    def _take_opening(self, kids: list[str], rows: list[tuple[Any, ...]]) -> None:
        for kid, h, c, wrapped, stale in rows:  # committed rows: the key to seal with as well, if used today
            entry = self._unwrap(kid, h, c, wrapped)
            self._put(self._by_kid, kid, entry)
            if not stale:
                self._put(self._by_subject, (h, c), entry)

    async def load_kids(self, conn: Any, kids: list[str]) -> None:
        missing = [k for k in kids if self._get(self._by_kid, k) is None]
        if missing:
            cur = await conn.execute(_BY_KID, (missing,))
            self._take_opening(missing, await cur.fetchall())

    def load_sync(self, conn: Any, tokens: Iterable[object]) -> None:
        kids = self.opening_missing(tokens)
        if kids:
            self._take_opening(kids, conn.execute(_BY_KID, (kids,)).fetchall())

    async def load(self, conn: Any, tokens: Iterable[object]) -> None:
        kids = self.opening_missing(tokens)
        if kids:
            cur = await conn.execute(_BY_KID, (kids,))
            self._take_opening(kids, await cur.fetchall())

    def open(self, token: str, subject: str, field: str, category: str | None = None) -> str:
        """The clear value of a sealed one (loaded first): ERASED if its key is destroyed; Forged
        if it names no key, a key of another subject or category, or does not open as ``field`` of
        ``subject``."""
        return self.open_bytes(token, subject, field, category).decode()

    def _entry_for(self, kid: str) -> DataKey | None:
        return self._by_kid.get(kid)  # no expiry check: load() made it just before

    def loaded(self, kid: str) -> DataKey | None:
        """The key ``kid`` names once loaded (None: no such key)."""
        return self._entry_for(kid)

    def open_bytes(self, token: str, subject: str, field: str, category: str | None = None) -> bytes:
        kid, blob = split_sealed(token)
        entry = self._entry_for(kid)
        if entry is None:
            raise Forged("sealed value names no data key")
        # The associated data binds a value to its subject and field, not to its key: a holder of the
        # keys token could seal B's value under A's key, where B's erasure would never reach it.
        if category is not None and entry.category != category:
            raise Forged("sealed value names a key of another category")
        if entry.subject_hash != self.hash_of(subject) and entry.subject_hash not in self.keyring.candidates(subject):
            raise Forged("sealed value names a key of another subject")
        if entry.aead is None:
            return ERASED.encode()
        return open_with(entry.aead, blob, subject, field)

    # -- destruction ---------------------------------------------------------------------------
    def subject_hashes(self, subjects: Iterable[str]) -> list[str]:
        """Every keyed hash a subject's keys can be filed under (each key of the ring)."""
        return sorted({h for s in subjects for h in self.keyring.candidates(s)})

    def _destroy_params(self, hashes: list[str], categories: Iterable[str]) -> tuple[list[str], ...]:
        pairs = sorted({(h, c) for h in hashes for c in categories})  # one lock order for every writer
        return [new_kid() for _ in pairs], [h for h, _ in pairs], [c for _, c in pairs]

    async def destroy(self, conn: Any, subjects: Iterable[str], categories: Iterable[str]) -> list[str]:
        """Destroy the subjects' keys of ``categories`` in the caller's transaction; returns the kids."""
        kids, hashes, cats = self._destroy_params(self.subject_hashes(subjects), categories)
        cur = await conn.execute(_DESTROY, (kids, hashes, cats))
        destroyed = [row[0] for row in await cur.fetchall()]
        self.forget(destroyed, zip(hashes, cats, strict=True))
        return destroyed

    async def delete_quiet(self, conn: Any, categories: list[str], unused_before: dt.date, grace_s: float,
                           limit: int = 10_000) -> int:
        """Delete up to ``limit`` live keys of ``categories`` last used before ``unused_before`` and
        marked retiring more than ``grace_s`` ago, then mark the next ones, in the caller's
        transaction (streams/ingest/quietkeys.py says when that is safe); how many were deleted."""
        args = {"categories": categories, "before": unused_before, "limit": limit, "grace_s": grace_s}
        rows = await (await conn.execute(_DELETE_RETIRED, args)).fetchall()
        await conn.execute(_MARK_RETIRING, args)
        self.forget([r[0] for r in rows], [(r[1], r[2]) for r in rows])
        return len(rows)


def check_master_key(conn: Any, wrapper: KeyWrapper, *, read_only: bool = False) -> None:
    """Create the key tables if needed and refuse a master key that is not the database's
    (``conn``: a sync psycopg connection in autocommit). MasterKeyMismatch names where the key came from.
    ``read_only``: compare only (a role that may create no table: `lifecycle front`)."""
    if read_only:
        exists = conn.execute("SELECT to_regclass('master_key_check')").fetchone()[0] is not None
        row = exists and conn.execute("SELECT kid, wrapped FROM master_key_check WHERE id = 1").fetchone()
        if not row:
            raise ConfigError("this database has no master key registered yet: start the worker first")
        wrapper.unwrap(row[0], _CANARY_SUBJECT, "check", bytes(row[1]))
        return
    conn.execute("SELECT pg_advisory_lock(7400004)")
    try:
        conn.execute(DDL)
        if conn.execute(_HAS_USED_ON).fetchone() is None:
            conn.execute(_USED_ON)
        row = conn.execute("SELECT kid, wrapped FROM master_key_check WHERE id = 1").fetchone()
        if row is None:
            kid = new_kid()
            conn.execute("INSERT INTO master_key_check (id, kid, wrapped) VALUES (1, %s, %s)",
                         (kid, wrapper.wrap(kid, _CANARY_SUBJECT, "check", secrets.token_bytes(32))))
        else:
            wrapper.unwrap(row[0], _CANARY_SUBJECT, "check", bytes(row[1]))
    finally:
        conn.execute("SELECT pg_advisory_unlock(7400004)")


def open_data_keys(settings: Settings, keyring: Keyring | None = None, *, create: bool = True,
                   read_only: bool = False) -> DataKeys:
    """The data keys of these settings, the master key checked against the database: what a
    process that seals or opens calls at start (``read_only``: see check_master_key)."""
    wrapper = load_master_key(settings, create=create)
    if settings.postgres_dsn:
        import psycopg

        with psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=10) as conn:
            check_master_key(conn, wrapper, read_only=read_only)
    return DataKeys(wrapper, keyring or load_keyring(settings, create=create), cache_s=settings.data_key_cache_s)
