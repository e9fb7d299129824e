"""`lifecycle store`: the downstream stores erasures wait for, their keys and backups."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from lifecycle.cli.common import say
from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError

__all__ = ["add_commands"]


def cmd_store_add(settings: Settings, args: argparse.Namespace) -> int:
    """Register a store: a new Ed25519 pair, the public half kept, the private half handed to its owner
    once (the pipeline keeps no copy, so it cannot sign for the store; docs/security.md)."""
    if not settings.postgres_dsn:
        raise LifecycleError("`lifecycle store add` needs LIFECYCLE_POSTGRES_DSN")
    import psycopg

    from lifecycle.core.keys import create_key_file
    from lifecycle.core.storekeys import fingerprint, register_store

    if args.out and Path(args.out).exists():
        raise LifecycleError(f"{args.out} exists: a store's key file is never overwritten")
    from lifecycle.store_registry import join, shipped

    with psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=10) as conn:
        signer = register_store(conn, args.name, replace=args.rotate)
        joined = join(settings.postgres_dsn, conn, args.name)
    assert signer.public is not None
    if args.out:
        create_key_file(Path(args.out), signer.text.encode(), encode=False)
        print(f"signing key of {args.name} written to {args.out} (mode 0600)", file=sys.stderr)
    else:
        say(signer.text)
    print(f"public key fingerprint {fingerprint(signer.public)}; the store signs each ack with it (Ed25519 of the "
          f"value, header lifecycle.signature; docs/protocol.md); the pipeline keeps only the public half",
          file=sys.stderr)
    if not shipped(args.name):
        print(f"{args.name}: every erasure opened from now on waits for its answer"
              f"{'' if joined else ' (as before)'}; `lifecycle up` does not start it: its owner runs it "
              f"(`lifecycle store remove {args.name}` ends this)", file=sys.stderr)
    return 0


def cmd_store_remove(settings: Settings, args: argparse.Namespace) -> int:
    """A store of another team leaves: erasures opened from now on stop waiting for it."""
    import psycopg

    from lifecycle.store_registry import leave

    with psycopg.connect(settings.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
        pending = leave(conn, args.name)
    say(f"{args.name}: erasures opened from now on do not wait for it; {pending} open erasure(s) still do "
         "(each completes only once it answers)")
    return 0


def cmd_store_backups(settings: Settings, args: argparse.Namespace) -> int:
    """Record how long a store keeps its backups, as its owner declares it (docs/erasure.md)."""
    import psycopg

    from lifecycle.store_registry import declare_backups

    with psycopg.connect(settings.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
        declare_backups(settings.postgres_dsn or "", conn, args.name, args.days)
    say(f"{args.name}: backups kept {args.days} day(s); certificates state when those that may hold an erased "
         "subject expire")
    return 0


def cmd_store_list(settings: Settings, args: argparse.Namespace) -> int:
    """Every store the pipeline knows: shipped or not, waited for, its key, what it has not answered."""
    import psycopg

    from lifecycle.store_registry import listing

    with psycopg.connect(settings.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
        rows = listing(conn)
    if args.json:
        say(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return 0
    say(f"{'store':<20} {'kind':<8} {'joined by':<17} {'waited for':<10} {'key':<8} {'pending':>7} "
         f"{'backups':>8}  last answer")
    for r in rows:
        joined_by = {"config": "ERASURE_STORES", "registered": "store add", "key": "-"}.get(r.origin, r.origin)
        say(f"{r.store:<20} {'shipped' if r.shipped else 'foreign':<8} {joined_by:<17} "
             f"{'yes' if r.waited_for else 'no':<10} {'Ed25519' if r.signing_key else 'none':<8} {r.pending:>7} "
             f"{(str(r.backup_days) + ' d') if r.backup_days is not None else '?':>8}  {r.last_answer or '-'}")
    return 0


def cmd_store_keys(settings: Settings, args: argparse.Namespace) -> int:
    """The stores' public keys, for an auditor's trust file (`proof verify --trust FILE`)."""
    import psycopg

    from lifecycle.core.storekeys import fingerprint, load_store_keys

    with psycopg.connect(settings.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
        keys = load_store_keys(conn, None)
    import base64

    say(json.dumps({store: {"algorithm": "Ed25519", "public_key": base64.b64encode(k.public).decode(),
                             "fingerprint": fingerprint(k.public)} if k.public else {"legacy_hmac": True}
                     for store, k in sorted(keys.items())}, indent=2))
    return 0


def add_commands(sub: Any) -> None:
    store = sub.add_parser("store", help="downstream stores").add_subparsers(dest="action", required=True)
    store_add = store.add_parser("add", help="make a store's signing key pair: the private half for its owner")
    store_add.add_argument("name")
    store_add.add_argument("--rotate", action="store_true",
                           help="replace the store's key (an HMAC key of before is refused from then on)")
    store_add.add_argument("--out", default=None, help="write the key to this file (0600) instead of printing it")
    store_add.set_defaults(fn=cmd_store_add, reads="database")
    store_keys = store.add_parser("keys", help="every store's public key, as JSON (for auditors)")
    store_keys.set_defaults(fn=cmd_store_keys, reads="database")
    store_remove = store.add_parser("remove", help="a store that joined with `store add` leaves new erasures")
    store_remove.add_argument("name")
    store_remove.set_defaults(fn=cmd_store_remove, reads="database")
    store_backups = store.add_parser("backups", help="how long a store keeps its backups, as its owner declares it")
    store_backups.add_argument("name")
    store_backups.add_argument("--days", type=int, required=True, help="0: the store keeps no backups")
    store_backups.set_defaults(fn=cmd_store_backups, reads="database")
    store_list = store.add_parser("list", help="every store: shipped or not, waited for, its key, its backlog")
    store_list.add_argument("--json", action="store_true")
    store_list.set_defaults(fn=cmd_store_list, reads="database")
