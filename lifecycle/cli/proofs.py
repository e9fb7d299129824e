"""`lifecycle proof` and `lifecycle orders`: certificates of erasure and the keys that sign them and the orders."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from lifecycle.cli.common import say
from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError

__all__ = ["add_commands"]


def _published_store_keys(path: Path) -> dict[str, str]:
    """``store -> base64 public key`` from a file as `lifecycle store keys` prints it."""
    try:
        doc = json.loads(path.read_text())
        return {store: entry["public_key"] for store, entry in doc.items() if "public_key" in entry}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise LifecycleError(f"{path}: not the stores' published keys (`lifecycle store keys`): "
                             f"{type(exc).__name__}") from None


def cmd_orders_key(settings: Settings, args: argparse.Namespace) -> int:
    """The pipeline's public order key, for the stores to verify orders with (docs/security.md)."""
    from lifecycle.core.orderkeys import load_order_signer

    public = load_order_signer(settings, create=not args.no_create).public
    say(public if args.raw else json.dumps({"algorithm": "Ed25519", "public_key": public,
                                             "header": "lifecycle.order-signature"}, indent=2))
    return 0


def cmd_proof(settings: Settings, args: argparse.Namespace) -> int:
    """Certificates of erasure: export one (signed), verify one offline, print the public key."""
    from lifecycle import proofs

    if args.action == "verify":
        trusted = args.public_key or os.environ.get("LIFECYCLE_PROOF_TRUST_FILE") or None
        public = Path(trusted).read_text().strip() if trusted else None
        stores_file = args.store_keys or os.environ.get("LIFECYCLE_STORE_TRUST_FILE") or None
        try:
            body = proofs.verify(Path(args.file).read_bytes(), public)
            store_keys = _published_store_keys(Path(stores_file)) if stores_file else None
            checked = proofs.verify_stores(body, store_keys)
        except proofs.SignerUnverified as exc:
            print(f"UNVERIFIED SIGNER: {exc}", file=sys.stderr)
            return 2
        except proofs.ProofRefused as exc:
            print(f"REFUSED: {exc}", file=sys.stderr)
            return 1
        for line in checked:
            say(line)
        if "backups_expire_by" in body:
            say(f"backups: every backup that may hold the subject expires by {body['backups_expire_by']}"
                 if body["backups_expire_by"] else
                 f"backups: no retention declared by {', '.join(body['backups_undeclared'])}: when their backups "
                 "expire is not known")
        say(f"replays on restored stores: {body.get('replays', 0)}"
             + (f", the last at {body['last_replayed_at']}" if body.get("last_replayed_at") else ""))
        if (extension := body.get("deadline_extension")):
            say(f"deadline extended by {extension['months']} month(s) on {extension['extended_at']} "
                 f"(Art. 12(3)): {extension['reason']}")
        say(f"valid: erasure {body['request_id']} completed {body['completed_at']}, "
             f"{len(body['stores'])} stores, {body['items_erased']} items, keys destroyed {body['keys_destroyed_at']}")
        return 0
    key = proofs.load_signing_key(settings, create=args.action != "key" or not args.no_create)
    if args.action == "key":
        info = proofs.public_key_text(key)
        say(info["public_key"] if args.raw else json.dumps(info, indent=2))
        return 0
    if not settings.postgres_dsn:
        raise LifecycleError("`lifecycle proof export` needs LIFECYCLE_POSTGRES_DSN")
    import psycopg

    with psycopg.connect(settings.postgres_dsn, connect_timeout=10) as conn:
        data = proofs.sign(proofs.certificate(conn, settings, args.request_id), key)
        proofs.record(conn, args.request_id, data)
    if args.out:
        Path(args.out).write_bytes(data)
        print(f"certificate written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return 0


def add_commands(sub: Any) -> None:
    proof = sub.add_parser("proof", help="signed certificates of erasure").add_subparsers(dest="action",
                                                                                     required=True)
    export_proof = proof.add_parser("export", help="the signed certificate of a completed erasure")
    export_proof.add_argument("request_id")
    export_proof.add_argument("--out", default=None, help="a file (default: standard output)")
    export_proof.set_defaults(fn=cmd_proof, reads="database")
    verify = proof.add_parser("verify", help="check a certificate offline (exit 1 when refused)")
    verify.add_argument("file")
    verify.add_argument("--public-key", default=None,
                        help="a file with the published key (`proof key --raw`); default: LIFECYCLE_PROOF_TRUST_FILE. "
                             "Without either the signer is unverified (exit 2)")
    verify.add_argument("--store-keys", default=None,
                        help="the stores' published keys (`lifecycle store keys`); default: "
                             "LIFECYCLE_STORE_TRUST_FILE. A v2 certificate's store receipts need them")
    verify.set_defaults(fn=cmd_proof)
    orders = sub.add_parser("orders", help="the key that signs every order to a store").add_subparsers(
        dest="action", required=True)
    orders_key = orders.add_parser("key", help="the public order key, to publish to the stores")
    orders_key.add_argument("--raw", action="store_true", help="the base64 key alone")
    orders_key.add_argument("--no-create", action="store_true", help="fail when there is no key yet")
    orders_key.set_defaults(fn=cmd_orders_key)
    proof_key = proof.add_parser("key", help="the public key that signs certificates, to publish")
    proof_key.add_argument("--raw", action="store_true", help="the base64 key alone")
    proof_key.add_argument("--no-create", action="store_true", help="fail when there is no key yet")
    proof_key.set_defaults(fn=cmd_proof)
