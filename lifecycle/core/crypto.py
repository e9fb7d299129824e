"""Crypto-shredding's primitives: the sealed form of a personal value, and the master key that
wraps every data key (docs/crypto-shredding.md).

A sealed value is one string in the same Avro field, so every Confluent-format client still
decodes the record with the schema alone::

    lc1:<kid>:<base64url(nonce || ciphertext || tag)>

``kid`` names the data key (22 characters of base64url, no padding); the cipher is AES-256-GCM
with a 12-byte random nonce; the associated data is ``lc1 \\0 <subject> \\0 <field>``, so a value
opens only as the same field of the same person: copied into another person's record it fails.
A value whose key was destroyed opens to ``ERASED``. Bytes fields (dead letters) hold the same
text, ASCII-encoded.

The master key only wraps data keys (AES-256-GCM too, bound to the key's id, subject hash and
category). ``KeyWrapper`` is the one interface a KMS would implement in its place.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError
from lifecycle.core.keys import create_key_file

__all__ = ["PREFIX", "ERASED", "Forged", "KeyWrapper", "LocalMasterKey", "load_master_key", "master_key_file",
           "split", "seal_with", "open_with", "new_kid", "MasterKeyMismatch", "init_master_key"]

PREFIX = "lc1:"
ERASED = "[erased]"  # what a value reads as once its subject's key is destroyed
_NONCE = 12
_KEY_BYTES = 32


class Forged(Exception):
    """A sealed value that does not open under its key as this subject's field: moved, altered or
    made up. Its message holds no value."""


class MasterKeyMismatch(ConfigError):
    """The master key given does not open the data keys of this database."""


def new_kid() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def split(token: str) -> tuple[str, bytes]:
    """(kid, nonce || ciphertext) of a sealed value; Forged if it is not well formed."""
    parts = token.split(":", 2)
    if len(parts) != 3 or len(parts[1]) != 22:
        raise Forged("sealed value is not lc1:<kid>:<data>")
    try:
        blob = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except (binascii.Error, ValueError):
        raise Forged("sealed value is not base64url") from None
    if len(blob) < _NONCE + 16:
        raise Forged("sealed value too short")
    return parts[1], blob


def _aad(subject: str, field: str) -> bytes:
    return b"lc1\x00" + subject.encode() + b"\x00" + field.encode()


def seal_with(aead: AESGCM, kid: str, subject: str, field: str, plain: bytes) -> str:
    nonce = os.urandom(_NONCE)
    blob = nonce + aead.encrypt(nonce, plain, _aad(subject, field))
    return f"{PREFIX}{kid}:{base64.urlsafe_b64encode(blob).rstrip(b'=').decode()}"


def open_with(aead: AESGCM, blob: bytes, subject: str, field: str) -> bytes:
    try:
        return aead.decrypt(blob[:_NONCE], blob[_NONCE:], _aad(subject, field))
    except InvalidTag:
        raise Forged("sealed value does not open as this subject's field") from None


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys; the local master key below, or a KMS."""

    def wrap(self, kid: str, subject_hash: str, category: str, key: bytes) -> bytes: ...

    def unwrap(self, kid: str, subject_hash: str, category: str, wrapped: bytes) -> bytes: ...


class LocalMasterKey:
    """A 32-byte AES-256-GCM key held by the process (from the environment or a key file)."""

    def __init__(self, key: bytes, origin: str):
        if len(key) != _KEY_BYTES:
            raise ConfigError(f"{origin}: a master key is {_KEY_BYTES} bytes (64 hex digits), got {len(key)}")
        self._aead = AESGCM(key)
        self.origin = origin  # where it came from, for error messages (never the key)

    def __repr__(self) -> str:
        return f"LocalMasterKey(origin={self.origin!r})"

    def wrap(self, kid: str, subject_hash: str, category: str, key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, key, f"{kid}\x00{subject_hash}\x00{category}".encode())

    def unwrap(self, kid: str, subject_hash: str, category: str, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:],
                                      f"{kid}\x00{subject_hash}\x00{category}".encode())
        except InvalidTag:
            raise MasterKeyMismatch(
                f"the master key from {self.origin} does not open this database's data keys: give the key "
                "the database was set up with (LIFECYCLE_MASTER_KEY or LIFECYCLE_MASTER_KEY_FILE)") from None


def master_key_file(settings: Settings) -> Path:
    return settings.master_key_file or settings.state_dir / "secrets" / "master.key"


def load_master_key(settings: Settings, *, create: bool = True) -> LocalMasterKey:
    """``LIFECYCLE_MASTER_KEY`` (64 hex digits), else ``LIFECYCLE_MASTER_KEY_FILE``, else
    ``<state>/secrets/master.key``, generated (mode 0600) when none exists and ``create``."""
    if settings.master_key is not None:
        return LocalMasterKey(_hex(settings.master_key.strip(), "LIFECYCLE_MASTER_KEY"), "LIFECYCLE_MASTER_KEY")
    path = master_key_file(settings)
    if not path.exists():
        if settings.master_key_file is not None:
            raise ConfigError(f"LIFECYCLE_MASTER_KEY_FILE: no such file: {path}")
        if not create:
            raise ConfigError(f"no master key at {path}; start the worker once, or set LIFECYCLE_MASTER_KEY_FILE")
        create_key_file(path, secrets.token_bytes(_KEY_BYTES))
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"master key file {path} unreadable: {exc.strerror}") from None
    return LocalMasterKey(_hex(text, f"master key file {path}"), str(path))


def init_master_key(settings: Settings) -> None:
    """Generate the master key file where these settings name it, if none is there (`keys init`)."""
    if settings.master_key is None and not master_key_file(settings).exists():
        create_key_file(master_key_file(settings), secrets.token_bytes(_KEY_BYTES))


def _hex(text: str, origin: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{origin}: expected 64 hex digits") from None
