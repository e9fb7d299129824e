"""`lifecycle keys`: the hash key behind every pseudonym."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lifecycle.cli.common import say
from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError

__all__ = ["add_commands"]


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Show the hash keys' fingerprints, or rotate: a new current key, the older ones kept."""
    from lifecycle.core.keys import key_file, open_keyring, rotate_key_file

    if args.action == "rotate":
        if not settings.postgres_dsn:
            raise LifecycleError("`lifecycle keys rotate` needs LIFECYCLE_POSTGRES_DSN")
        import psycopg

        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            keys = rotate_key_file(settings, conn)
        say(f"new current key {keys.fingerprints()[0]} in {key_file(settings)}; restart every worker and connector")
    else:  # init creates the key files when there are none; fingerprint never does
        if args.action == "init":  # the master key of the data keys too (docs/crypto-shredding.md)
            from lifecycle.core.crypto import init_master_key
            from lifecycle.core.datakeys import open_data_keys
            from lifecycle.core.keys import init_key_file

            init_key_file(settings)
            init_master_key(settings)
            from lifecycle.proofs import load_signing_key
            from lifecycle.streams.http.auth import init_tokens_file

            load_signing_key(settings)  # the key that signs certificates of erasure

            if init_tokens_file(settings):
                print(f"HTTP tokens written to {settings.http_tokens_file} (one per scope: ingest, read, keys)",
                      file=sys.stderr)
            open_data_keys(settings, open_keyring(settings, create=False), create=False)
            from lifecycle.core.pgroles import init_passwords

            if (folder := init_passwords(settings, settings.erasure_stores)) is not None:
                print(f"PostgreSQL role passwords in {folder} (one per component)", file=sys.stderr)
            if args.hand_out:
                import psycopg

                from lifecycle.handout import hand_out

                with psycopg.connect(settings.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
                    for handed in hand_out(settings, Path(args.hand_out), settings.erasure_stores, conn):
                        print(f"secrets of {handed.name} in {handed}", file=sys.stderr)
        keys = open_keyring(settings, create=False)
    print(json.dumps({"current": keys.fingerprints()[0], "older": list(keys.fingerprints()[1:])}))
    return 0


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the hash key behind every pseudonym").add_subparsers(dest="action",
                                                                                          required=True)
    keys_init = keys.add_parser("init", help="create the key files if there are none; print fingerprints")
    keys_init.add_argument("--hand-out", default=None, metavar="DIR",
                           help="then give each party a folder of its own secrets alone (lifecycle/handout.py)")
    keys_init.set_defaults(fn=cmd_keys)
    keys.add_parser("fingerprint", help="the fingerprints of the key ring, current first").set_defaults(
        fn=cmd_keys, reads="database")
    keys.add_parser("rotate", help="a new current key; older ones stay for matching").set_defaults(fn=cmd_keys)
