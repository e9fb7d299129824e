"""Sealed boxes: what a store sends back for an access request (docs/access.md), readable only by
the pipeline that asked, and by nobody once the archive is assembled.

Each access order carries the public half of an X25519 key made for that request alone. A store
seals every part of its answer to it: a fresh X25519 key of its own, the shared secret through
HKDF-SHA256 (salt: both public keys) into an AES-256-GCM key, the associated data naming the
request, the store and the part, so a part replayed into another request or store does not open::

    ephemeral public key (32) || nonce (12) || ciphertext || tag (16)

The private half is wrapped by the master key while the request is open and destroyed when the
archive is assembled: the answers stay on `erasure-acks` until its retention, unreadable.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["new_box_key", "public_of", "seal_to", "open_box", "BoxError", "part_aad"]

_INFO = b"lifecycle-access-answer/1"
_RAW = serialization.Encoding.Raw


class BoxError(Exception):
    """A sealed part that does not open: another key, another request or store, or altered."""


def new_box_key() -> tuple[bytes, bytes]:
    """(private, public), 32 raw bytes each."""
    private = X25519PrivateKey.generate().private_bytes(_RAW, serialization.PrivateFormat.Raw,
                                                        serialization.NoEncryption())
    return private, public_of(private)


def public_of(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def part_aad(request_id: str, store: str, part: int, parts: int) -> bytes:
    return f"{request_id}\0{store}\0{part}\0{parts}".encode()


def _key(shared: bytes, ephemeral: bytes, recipient: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_INFO).derive(shared)
    return AESGCM(derived)


def seal_to(recipient: bytes, plain: bytes, aad: bytes) -> bytes:
    """``plain`` sealed to the raw X25519 public key ``recipient``."""
    try:
        their = X25519PublicKey.from_public_bytes(recipient)
    except ValueError as exc:
        raise BoxError("the answer key is not an X25519 public key") from exc
    mine = X25519PrivateKey.generate()
    ephemeral = mine.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    nonce = os.urandom(12)
    return ephemeral + nonce + _key(mine.exchange(their), ephemeral, recipient).encrypt(nonce, plain, aad)


def open_box(private: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < 32 + 12 + 16:
        raise BoxError("too short to be a sealed part")
    ephemeral, nonce, body = sealed[:32], sealed[32:44], sealed[44:]
    mine = X25519PrivateKey.from_private_bytes(private)
    recipient = mine.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    try:
        shared = mine.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        return _key(shared, ephemeral, recipient).decrypt(nonce, body, aad)
    except (InvalidTag, ValueError) as exc:
        raise BoxError("a sealed part does not open") from exc
