"""Orders that cannot be forged (docs/security.md): every record that commands a store (a
DeletionOrder on `tombstones`, an AccessOrder on `access-orders`, a RetentionOrder on
`retention-orders`) is signed by the pipeline with Ed25519 over the record's value bytes (the
Confluent-framed Avro), the signature in the header ``lifecycle.order-signature`` (base64). A
store acts only on an order whose signature verifies under the pipeline's published order key,
given to it from outside (``LIFECYCLE_ORDER_PUBLIC_KEY``, or the file the worker writes beside its
key); it never trusts a key carried by the record it checks.

Each order also carries a ``nonce`` its answer must echo: a keyed hash (HMAC-SHA256 under a key
derived from the order key) of what the order is (kind, request, action, round). The pipeline
computes it again when the answer comes, so an answer to another order, round or request, or a
replay of an old one, is refused, and no state is kept for it.

The signing key: ``LIFECYCLE_ORDER_KEY_FILE``, else ``<state>/secrets/order.key`` (the raw private
key, hex, mode 0600), created on first use by the worker; ``<state>/secrets/order.pub`` holds the
public half (base64) for the stores on the same machine, and `lifecycle orders key` prints it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError
from lifecycle.core.keys import load_ed25519_key

__all__ = ["ORDER_SIGNATURE_HEADER", "OrderSigner", "OrderVerifier", "order_key_file", "order_public_file",
           "load_order_signer", "load_order_verifier", "public_text", "nonce_of"]

ORDER_SIGNATURE_HEADER = "lifecycle.order-signature"


def order_key_file(settings: Settings) -> Path:
    return settings.order_key_file or settings.state_dir / "secrets" / "order.key"


def order_public_file(settings: Settings) -> Path:
    return settings.order_public_key_file or order_key_file(settings).with_name("order.pub")


def public_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def nonce_of(secret: bytes, kind: str, request_id: str, action: str = "", round_: int = 0) -> str:
    """The nonce of one order: 32 hex digits, the same for the same order, unguessable without ``secret``."""
    message = f"{kind}\x00{request_id}\x00{action}\x00{round_}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


class OrderSigner:
    """The pipeline's side: sign orders, make and check nonces. Held by the worker (and the
    operator's CLI, which queues orders for the worker to send) alone."""

    def __init__(self, key: Ed25519PrivateKey):
        self._key = key
        raw = key.private_bytes_raw()
        self._nonce_secret = hashlib.sha256(b"lifecycle-order-nonce\x00" + raw).digest()
        self.public = public_text(key.public_key())

    def __repr__(self) -> str:  # never the key itself
        return f"OrderSigner(public={self.public!r})"

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        return [(ORDER_SIGNATURE_HEADER, base64.b64encode(self._key.sign(value)))]

    def nonce(self, kind: str, request_id: str, action: str = "", round_: int = 0) -> str:
        return nonce_of(self._nonce_secret, kind, request_id, action, round_)

    def nonce_matches(self, given: object, kind: str, request_id: str, action: str = "", round_: int = 0) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given.encode(),
                                                              self.nonce(kind, request_id, action, round_).encode())


class OrderVerifier:
    """A store's side: the pipeline's public order key, given from outside."""

    def __init__(self, public: str, origin: str):
        try:
            self._key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.strip(), validate=True))
        except (ValueError, binascii.Error):
            raise ConfigError(f"{origin}: expected the pipeline's order key (base64 of 32 bytes, "
                              "as `lifecycle orders key` prints it)") from None

    def problem(self, value: bytes | None, headers: Iterable[tuple[str, bytes]] | None) -> tuple[str, str] | None:
        """(reason, message) when the order is not signed by the pipeline; None when it is."""
        given = [v for k, v in headers or () if k == ORDER_SIGNATURE_HEADER]
        if not given:
            return "unsigned_order", "no lifecycle.order-signature header"
        if len(given) != 1 or value is None:
            return "bad_signature", "more than one signature, or no value"
        try:
            self._key.verify(base64.b64decode(given[0], validate=True), value)
        except (ValueError, binascii.Error, InvalidSignature):
            return "bad_signature", "the signature does not verify under the pipeline's order key"
        return None


def load_order_signer(settings: Settings, *, create: bool = True) -> OrderSigner:
    """The pipeline's order key (created when missing and ``create``); its public half is written
    beside it for the stores of this machine."""
    path = order_key_file(settings)
    signer = OrderSigner(load_ed25519_key(
        path, create=create, what="order signing key",
        missing=f"no order signing key at {path}: start the worker once, or set LIFECYCLE_ORDER_KEY_FILE"))
    public = order_public_file(settings)
    try:
        if not public.exists() or public.read_text().strip() != signer.public:
            public.write_text(signer.public + "\n")
    except OSError:
        pass  # a read-only secrets folder: the public key is published by `lifecycle orders key`
    return signer


def load_order_verifier(settings: Settings) -> OrderVerifier:
    """``LIFECYCLE_ORDER_PUBLIC_KEY`` (base64), else ``LIFECYCLE_ORDER_PUBLIC_KEY_FILE``, else the
    public file beside the pipeline's order key."""
    if settings.order_public_key:
        return OrderVerifier(settings.order_public_key, "LIFECYCLE_ORDER_PUBLIC_KEY")
    path = order_public_file(settings)
    try:
        return OrderVerifier(path.read_text(), str(path))
    except OSError:
        raise ConfigError(f"a store acts only on signed orders: set LIFECYCLE_ORDER_PUBLIC_KEY (from `lifecycle "
                          f"orders key`), or start the worker first so that {path} exists") from None
