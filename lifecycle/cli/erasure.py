"""`lifecycle erasure` and `lifecycle request`: erasures store by store, verified again, replayed on a restored store;
requests' deadlines extended."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from lifecycle.cli.common import in_transaction, say
from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError

__all__ = ["add_commands"]


def cmd_erasure_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the account's erasures, store by store (by keyed hash: no personal data stored)."""
    if not settings.postgres_dsn:
        raise LifecycleError("`lifecycle erasure status` needs LIFECYCLE_POSTGRES_DSN")
    import asyncio

    from lifecycle.core.keys import open_keyring
    from lifecycle.streams.erasure import erasure_status
    from lifecycle.streams.runtime.database import connect

    async def query() -> list[dict[str, Any]]:
        keys = open_keyring(settings, create=False)
        conn = await connect(settings.postgres_dsn or "")
        try:
            return await erasure_status(conn, keys, args.account)
        finally:
            await conn.close()

    statuses = asyncio.run(query())
    print(json.dumps({"erasures": statuses}, indent=2))
    return 0 if statuses else 1


def cmd_erasure_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Make completed erasures due for verification: the worker sends verify orders at its next
    tick; a store that finds data again regresses the proof and re-opens the erasure."""
    import uuid

    from lifecycle.streams.erasure import reverify

    try:
        ids = [uuid.UUID(r) for r in args.request_ids] or None
    except ValueError:
        raise LifecycleError("request ids: expected UUIDs (as `lifecycle erasure status` shows)") from None

    count = in_transaction(settings, lambda conn: reverify(conn, ids))
    say(f"{count} completed erasure(s) due for verification at the worker's next tick")
    return 0 if count or not ids else 1


def cmd_erasure_replay(settings: Settings, args: argparse.Namespace) -> int:
    """The restore guard (streams/erasure/restore_guard.py): ask for a replay (and wait for it), or list them."""
    import datetime as dt

    from lifecycle.streams.erasure.restore_guard import replay_report, request_replay

    if args.action == "replays":
        print(json.dumps({"replays": in_transaction(settings, replay_report)}, indent=2))
        return 0
    since = None
    if args.since:
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            raise LifecycleError(f"--since: not an ISO 8601 date: {args.since!r}") from None
        since = since if since.tzinfo else since.replace(tzinfo=dt.UTC)

    async def ask(conn: Any) -> Any:
        cur = await conn.execute("SELECT 1 FROM erasure_stores WHERE store = %s AND active", (args.store,))
        if await cur.fetchone() is None:
            raise LifecycleError(f"--store: {args.store!r} is not a registered store (LIFECYCLE_ERASURE_STORES)")
        return await request_replay(conn, args.store, since)

    asked = in_transaction(settings, ask)
    print(f"replay {asked['replay_id']}: {asked['proofs']} completed erasure(s) to check on {args.store} at the "
          "worker's next tick", file=sys.stderr, flush=True)  # stdout holds the JSON answer alone
    end = time.monotonic() + args.wait
    while args.wait:
        [mine] = [r for r in in_transaction(settings, replay_report) if r["replay_id"] == asked["replay_id"]]
        if mine["checked"] >= mine["proofs"] and not mine["erasing_again"]:
            print(json.dumps(mine, indent=2))
            return 0
        if time.monotonic() > end:
            print(json.dumps(mine, indent=2))
            print(f"replay {asked['replay_id']} not finished after {args.wait:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(json.dumps(asked, indent=2))
    return 0


def cmd_request_extend(settings: Settings, args: argparse.Namespace) -> int:
    """Extend an open access or erasure request's deadline once, by one or two months (GDPR Art.
    12(3)); the person is told through the notice on request-notices (streams/access/extensions.py)."""
    import asyncio
    import datetime as dt

    from lifecycle.streams.access.extensions import ExtensionRefused, extend
    from lifecycle.streams.runtime.database import connect

    async def run() -> dict[str, Any]:
        conn = await connect(settings.postgres_dsn or "")
        try:
            async with conn.transaction():
                return await extend(conn, args.request_id, args.months, args.reason, args.by, dt.datetime.now(dt.UTC))
        finally:
            await conn.close()

    try:
        done = asyncio.run(run())
    except ExtensionRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    say(json.dumps(done, indent=2))
    return 0


def add_commands(sub: Any) -> None:
    erasure = sub.add_parser("erasure", help="erasure requests").add_subparsers(dest="action", required=True)
    status = erasure.add_parser("status", help="an account's erasures, store by store")
    status.add_argument("account")
    status.set_defaults(fn=cmd_erasure_status, reads="database")
    again = erasure.add_parser("verify", help="have every store check completed erasures again at the next tick")
    again.add_argument("request_ids", nargs="*", help="request ids (default: every completed erasure)")
    again.set_defaults(fn=cmd_erasure_verify, reads="database")
    replay = erasure.add_parser("replay", help="re-apply completed erasures to a store restored from a backup")
    replay.add_argument("--store", required=True, help="the restored store")
    replay.add_argument("--since", default=None, help="erasures completed from this date (ISO 8601; default: all)")
    replay.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                        help="wait up to this long until the store answered for every erasure")
    replay.set_defaults(fn=cmd_erasure_replay, reads="database")
    erasure.add_parser("replays", help="every replay and how far it got").set_defaults(
        fn=cmd_erasure_replay, reads="database")
    request = sub.add_parser("request", help="access and erasure requests").add_subparsers(dest="action",
                                                                                         required=True)
    extend = request.add_parser("extend", help="extend an open request's deadline once, by 1 or 2 months "
                                               "(GDPR Art. 12(3)); the person is told with the reason")
    extend.add_argument("request_id")
    extend.add_argument("--months", type=int, required=True, help="1 or 2")
    extend.add_argument("--reason", required=True, help="why, as the person will be told (no personal data)")
    extend.add_argument("--by", required=True, help="who decided: a role or a name of the controller's staff")
    extend.set_defaults(fn=cmd_request_extend, reads="database")
