"""Least privilege for a deployment whose processes run apart (docker-compose.yml): each party gets a
folder with the secrets it needs and nothing else (docs/security.md, "Who holds which key").

`lifecycle keys init --hand-out DIR`, run once by the provisioning step after the keys exist:

    DIR/worker/         hash.key, master.key, order.key, order.pub, http-tokens, postgres-roles/*.password
    DIR/store-NAME/     hash.key, order.pub, store.key (its own signing key), postgres-roles/store-NAME.password
    DIR/certificates/   proof.key (where certificates of erasure are issued), postgres-roles/reader.password
    DIR/front/          hash.key, master.key (to seal), http-tokens (ingest tokens alone), postgres-roles/front.password

A store's signing key is made here (its public half registered, the private half written to its
folder alone) unless its folder has one already. Files are written 0600, never overwritten.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lifecycle.core.config import Settings
from lifecycle.core.crypto import master_key_file
from lifecycle.core.keys import create_key_file, key_file
from lifecycle.core.orderkeys import load_order_signer, order_key_file, order_public_file
from lifecycle.core.pgroles import roles_dir
from lifecycle.core.storekeys import check_store_name, register_store
from lifecycle.proofs import proof_key_file

__all__ = ["hand_out", "PARTIES"]

PARTIES = ("worker", "certificates", "front")  # and store-NAME for every store


def _copy(src: Path, dst: Path) -> None:
    if dst.exists() or not src.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    create_key_file(dst, src.read_bytes(), encode=False)


def hand_out(settings: Settings, root: Path, stores: Iterable[str], conn: Any) -> list[Path]:
    """Write each party's folder under ``root``; returns the folders. ``conn``: the owner's sync
    connection (autocommit), to register the stores' public keys."""
    load_order_signer(settings)  # the order key exists before it is handed out
    roles = roles_dir(settings)
    worker = root / "worker"
    for src in (key_file(settings), master_key_file(settings), order_key_file(settings), order_public_file(settings)):
        _copy(src, worker / src.name)
    if settings.http_tokens_file is not None:
        _copy(settings.http_tokens_file, worker / "http-tokens")
    for password in sorted(roles.glob("*.password")):
        _copy(password, worker / "postgres-roles" / password.name)
    certificates = root / "certificates"
    _copy(proof_key_file(settings), certificates / "proof.key")
    _copy(roles / "reader.password", certificates / "postgres-roles" / "reader.password")
    front = root / "front"  # `lifecycle front`: seals and journals; signs nothing, reads nothing applied
    for src in (key_file(settings), master_key_file(settings)):
        _copy(src, front / src.name)
    _copy(roles / "front.password", front / "postgres-roles" / "front.password")
    if settings.http_tokens_file is not None and settings.http_tokens_file.exists() and \
            not (front / "http-tokens").exists():
        lines = [line.split() for line in settings.http_tokens_file.read_text().splitlines()]
        ingest = [f"ingest {parts[1]}\n" for parts in lines
                  if len(parts) == 2 and not parts[0].startswith("#") and "ingest" in parts[0].split(",")]
        create_key_file(front / "http-tokens", "".join(ingest).encode(), encode=False)
    folders = [worker, certificates, front]
    for store in stores:
        folder = root / f"store-{check_store_name(store)}"
        _copy(key_file(settings), folder / "hash.key")
        _copy(order_public_file(settings), folder / "order.pub")
        _copy(roles / f"store-{store}.password", folder / "postgres-roles" / f"store-{store}.password")
        if not (folder / "store.key").exists():
            signer = register_store(conn, store, replace=True)  # a fresh folder: the store's key starts here
            create_key_file(folder / "store.key", signer.text.encode(), encode=False)
        folders.append(folder)
    for folder in folders:
        os.chmod(folder, 0o700)
    return folders
