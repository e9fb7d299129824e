"""A store's signing key and the producer that signs every answer with it (docs/security.md): the
pipeline verifies each acknowledgement against the store's registered public key."""

from __future__ import annotations

import logging
from typing import Any

from lifecycle.core.config import Settings
from lifecycle.core.errors import ConfigError
from lifecycle.core.keys import create_key_file
from lifecycle.core.pgroles import component_dsn
from lifecycle.core.storekeys import AckSigner, register_public_key, store_key_path

__all__ = ["SigningProducer", "store_key"]

log = logging.getLogger("lifecycle.connector")


class SigningProducer:
    """Every acknowledgement signed with the store's key (lifecycle/core/storekeys.py)."""

    def __init__(self, producer: Any, key: AckSigner):
        self.producer, self.key = producer, key

    async def send(self, topic: str, key: bytes | None, value: bytes, extra: list[tuple[str, bytes]] | None = None
                   ) -> Any:
        """Queue one record; the future it returns resolves once the broker has it."""
        headers = [*(extra or ()), *self.key.headers(value)]
        return await self.producer.send(topic, key=key, value=value, headers=headers)

    async def flush(self) -> None:
        await self.producer.flush()


def store_key(settings: Settings, store: str) -> AckSigner:
    """The store's own signing key: ``LIFECYCLE_STORE_KEY``, else ``LIFECYCLE_STORE_KEY_FILE``, else
    ``<state>/secrets/stores/NAME.key``; a connector of the pipeline's that has none yet makes its
    pair there and registers the public half with its own PostgreSQL role (docs/security.md)."""
    if settings.store_key:
        return AckSigner(settings.store_key, "LIFECYCLE_STORE_KEY")
    path = settings.store_key_file or store_key_path(settings.state_dir, store)
    if path.exists():
        try:
            return AckSigner(path.read_text(), str(path))
        except OSError as exc:
            raise ConfigError(f"store key file {path} unreadable: {exc.strerror}") from None
    if settings.store_key_file is not None:
        raise ConfigError(f"LIFECYCLE_STORE_KEY_FILE: no such file: {path}")
    if not settings.postgres_dsn:
        raise ConfigError("a store signs its acks: set LIFECYCLE_STORE_KEY_FILE (from `lifecycle store add NAME`)")
    import psycopg

    signer = AckSigner.generate()
    assert signer.public is not None
    with psycopg.connect(component_dsn(settings, f"store-{store}"), autocommit=True, connect_timeout=10) as conn:
        register_public_key(conn, store, signer.public, replace=False)  # its own row alone (row-level security)
    create_key_file(path, signer.text.encode(), encode=False)
    log.info("store %s: a signing key made and registered (%s)", store, path)
    return signer
