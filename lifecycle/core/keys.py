"""The key behind every pseudonym the pipeline writes: the proof of erasure, the suppression list,
the files store's retained folders. One keyed hash (HMAC-SHA256) and one loader.

Where the key lives, first that applies: ``LIFECYCLE_HASH_KEY`` (the text itself),
``LIFECYCLE_HASH_KEY_FILE``, or ``<state>/secrets/hash.key``, generated on first use (mode 0600).
Never in the database that holds the data: a copy of that database alone must not let anyone
reverse a pseudonym by hashing candidate ids.

A key file holds one hex-encoded key a line, the current one first. The hashes are one-way, so
what an older key hashed can never be re-hashed under a new one; a rotation therefore adds a key
in front and keeps the older ones, which are still tried when matching (``candidates``).

The database records the fingerprint of every key it was set up with (``hash_keys``). A process
given another key refuses to start: with a changed key every suppression and proof would silently
stop matching, and an erased account could be re-created.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError

__all__ = ["HASH_KEYS_DDL", "Keyring", "KeyMismatch", "load_keyring", "check_keyring", "open_keyring", "key_file",
           "init_key_file", "rotate_key_file", "create_key_file", "MIN_KEY_BYTES"]

MIN_KEY_BYTES = 16
_FINGERPRINT_INPUT = b"lifecycle/hash-key-fingerprint/v1"


class KeyMismatch(ConfigError):
    """The key given is not the one the database was set up with."""


@dataclasses.dataclass(frozen=True)
class Keyring:
    """The current key first, then the keys it replaced."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys or any(len(k) < MIN_KEY_BYTES for k in self.keys):
            raise ConfigError(f"a hash key must hold at least {MIN_KEY_BYTES} bytes")

    def __repr__(self) -> str:  # never the key itself
        return f"Keyring(fingerprints={self.fingerprints()})"

    def pseudonym(self, text: str) -> str:
        """The keyed hash of ``text`` under the current key."""
        return hmac.new(self.keys[0], text.encode(), hashlib.sha256).hexdigest()

    def candidates(self, text: str) -> tuple[str, ...]:
        """The keyed hash of ``text`` under every key of the ring, current first."""
        return tuple(hmac.new(k, text.encode(), hashlib.sha256).hexdigest() for k in self.keys)

    def fingerprints(self) -> tuple[str, ...]:
        return tuple(_fingerprint(k) for k in self.keys)


def _fingerprint(key: bytes) -> str:
    return hmac.new(key, _FINGERPRINT_INPUT, hashlib.sha256).hexdigest()[:16]


def key_file(settings: Settings) -> Path:
    return settings.hash_key_file or settings.state_dir / "secrets" / "hash.key"


def load_keyring(settings: Settings, *, create: bool = True) -> Keyring:
    """The keyring these settings name; a key file is generated when none is configured and none
    exists yet (``create``). Raises ConfigError for an empty, short or unreadable key."""
    if settings.hash_key is not None:
        if not settings.hash_key:
            raise ConfigError("LIFECYCLE_HASH_KEY is set but empty; unset it or give a key")
        return Keyring((settings.hash_key.encode(),))
    path = key_file(settings)
    if not path.exists():
        if settings.hash_key_file is not None:
            raise ConfigError(f"LIFECYCLE_HASH_KEY_FILE: no such file: {path}")
        if not create:
            raise ConfigError(f"no hash key at {path}; start the worker once, or set LIFECYCLE_HASH_KEY_FILE")
        create_key_file(path, secrets.token_bytes(32))
    return _read_key_file(path)


def init_key_file(settings: Settings) -> None:
    """Generate the key file where these settings name it, configured or default, if none is there
    (`lifecycle keys init`: a deployment's one-shot step; processes never create a configured file)."""
    if settings.hash_key is None and not key_file(settings).exists():
        create_key_file(key_file(settings), secrets.token_bytes(32))


def _read_key_file(path: Path) -> Keyring:
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as exc:
        raise ConfigError(f"hash key file {path} unreadable: {exc.strerror}") from None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise ConfigError(f"hash key file {path} is empty")
    try:
        return Keyring(tuple(bytes.fromhex(ln) for ln in lines))
    except ValueError:
        raise ConfigError(f"hash key file {path}: each line must be one hex-encoded key") from None


def create_key_file(path: Path, key: bytes, *, encode: bool = True) -> None:
    """Write a new key file atomically (``key`` hex-encoded, or as it is when not ``encode``), mode
    0600; a process that raced us and won keeps its file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(key.hex() + "\n" if encode else key.decode())
        try:
            os.link(tmp, path)  # fails if another process created it first
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def load_ed25519_key(path: Path, *, create: bool, missing: str, what: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from a file of 64 hex digits (its raw bytes), made (0600) when there is
    none and ``create``; ConfigError ``missing`` when there is none, or naming ``what`` when unreadable."""
    if not path.exists():
        if not create:
            raise ConfigError(missing)
        create_key_file(path, secrets.token_bytes(32))
    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    except (ValueError, OSError):
        raise ConfigError(f"{what} {path}: expected 64 hex digits") from None


HASH_KEYS_DDL = """
CREATE TABLE IF NOT EXISTS hash_keys (
    fingerprint text PRIMARY KEY,
    active      boolean NOT NULL DEFAULT true,
    added_at    timestamptz NOT NULL DEFAULT now()
)"""


def open_keyring(settings: Settings, *, create: bool = True, read_only: bool = False) -> Keyring:
    """The keyring, checked against the database when one is configured: what every process
    calls at start, so that none runs with an empty or a changed key. ``read_only``: compare
    only (a connector's role reads the fingerprints and may not register them)."""
    keys = load_keyring(settings, create=create)
    if settings.postgres_dsn:
        import psycopg

        with psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=10) as conn:
            if read_only:
                _compare(conn, keys)
            else:
                check_keyring(conn, keys)
    return keys


def register_keyring(conn: Any, keyring: Keyring, *, active: bool = True) -> None:
    """Record the ring's fingerprints (a rotation registers its new key inactive until the file holds it)."""
    conn.execute("INSERT INTO hash_keys (fingerprint, active) SELECT unnest(%s::text[]), %s ON CONFLICT DO NOTHING",
                 (list(keyring.fingerprints()), active))


def check_keyring(conn: Any, keyring: Keyring) -> None:
    """Refuse a key the database was not set up with (``conn``: a psycopg connection in autocommit)."""
    conn.execute("SELECT pg_advisory_lock(7400002)")  # processes starting together register once
    try:
        conn.execute(HASH_KEYS_DDL)
        _check(conn, keyring)
    finally:
        conn.execute("SELECT pg_advisory_unlock(7400002)")


def _check(conn: Any, keyring: Keyring) -> None:
    if not conn.execute("SELECT 1 FROM hash_keys LIMIT 1").fetchone():
        register_keyring(conn, keyring)  # the database's first start
    # A rotation interrupted after its file was written: the file is the truth, finish it.
    conn.execute("UPDATE hash_keys SET active = true WHERE fingerprint = %s AND NOT active",
                 (keyring.fingerprints()[0],))
    _compare(conn, keyring)


def _compare(conn: Any, keyring: Keyring) -> None:
    if conn.execute("SELECT to_regclass('hash_keys')").fetchone()[0] is None:
        raise KeyMismatch("this database has no hash key registered yet: start the worker first")
    ring = keyring.fingerprints()
    known = {row[0] for row in conn.execute("SELECT fingerprint FROM hash_keys WHERE active").fetchall()}
    missing = sorted(known - set(ring))
    if ring[0] not in known or missing:
        raise KeyMismatch(
            f"hash key fingerprint {ring[0]} does not match this database "
            f"(it was set up with {', '.join(sorted(known))}). A changed key would make every suppression and "
            "proof of erasure unmatchable. Give the original key, or add a new one with `lifecycle keys rotate`.")


def rotate_key_file(settings: Settings, conn: Any) -> Keyring:
    """Put a new key in front of the key file and register it; older keys stay for matching."""
    if settings.hash_key is not None:
        raise ConfigError("rotation needs a key file: unset LIFECYCLE_HASH_KEY and use LIFECYCLE_HASH_KEY_FILE")
    current = load_keyring(settings, create=False)
    check_keyring(conn, current)
    rotated = Keyring((secrets.token_bytes(32), *current.keys))
    path = key_file(settings)
    tmp = path.with_name(f".{path.name}.rotating")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("".join(k.hex() + "\n" for k in rotated.keys))
    # Registered inactive first: a crash before the file is replaced leaves the old ring, still accepted.
    register_keyring(conn, Keyring(rotated.keys[:1]), active=False)
    os.replace(tmp, path)
    conn.execute("UPDATE hash_keys SET active = true WHERE fingerprint = %s", (rotated.fingerprints()[0],))
    return rotated
