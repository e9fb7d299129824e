"""`lifecycle export`, `records`, `datamap`, `openapi` and `retention plan`: what is held and why."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lifecycle.cli.common import in_transaction, say
from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError

__all__ = ["add_commands"]


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """Everything the pipeline's database and files hold about one account, as JSON on standard
    output; with ``--archive``, the access archive gathered from every store (docs/access.md)."""
    if not settings.postgres_dsn:
        raise LifecycleError("`lifecycle export` needs LIFECYCLE_POSTGRES_DSN")
    if args.archive:
        return _export_archive(settings, args)
    from lifecycle.export import export_account

    data = export_account(settings.postgres_dsn, settings.files_dir, args.account)
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0 if data["profile"] else 1


def _ledger_context(settings: Settings) -> Any:
    """What the worker's ledger functions need, for a command that writes to the ledger itself
    (its records go through the outbox, which the running worker relays)."""
    from prometheus_client import CollectorRegistry

    from lifecycle.core.clock import make_clock
    from lifecycle.core.datakeys import open_data_keys
    from lifecycle.core.keys import open_keyring
    from lifecycle.core.orderkeys import load_order_signer
    from lifecycle.core.policy import load_policy
    from lifecycle.schemas.catalog import load_catalog
    from lifecycle.schemas.codec import Codec
    from lifecycle.schemas.registry import make_registry
    from lifecycle.streams.runtime.context import PipelineContext
    from lifecycle.streams.runtime.metrics import Metrics

    catalog = load_catalog()
    keys = open_keyring(settings, create=False)
    return PipelineContext(settings=settings, clock=make_clock(settings.clock), keys=keys,
                   codec=Codec(make_registry(settings.schema_registry_url, catalog), catalog,
                               topic_prefix=settings.topic_prefix),
                   metrics=Metrics.create(CollectorRegistry(), catalog), policy=load_policy(settings.retention_policy),
                   data_keys=open_data_keys(settings, keys, create=False),
                   orders=load_order_signer(settings, create=False))


def _export_archive(settings: Settings, args: argparse.Namespace) -> int:
    """Open (or find) the account's access request, wait for every store, write the zip."""
    from pathlib import Path

    from lifecycle.streams.access.requests import access_state, open_access

    ctx = _ledger_context(settings)
    state = in_transaction(settings, lambda conn: open_access(conn, ctx, args.account))
    if state is None:
        raise LifecycleError(f"no account {args.account!r} in the pipeline (never registered, or erased)")
    print(f"access request {state['request_id']}: asked {len(state['stores'])} store(s), deadline "
          f"{state['deadline']}", file=sys.stderr, flush=True)
    end = time.monotonic() + args.wait
    while state["archive"] is None:
        if time.monotonic() > end:
            state.pop("archive")
            print(json.dumps(state, indent=2))
            print(f"not every store has answered after {args.wait:.0f} s; run again later", file=sys.stderr)
            return 1
        time.sleep(0.5)
        state = in_transaction(settings, lambda conn: access_state(conn, ctx, args.account)) or state
    Path(args.archive).write_bytes(state.pop("archive"))
    print(json.dumps({**state, "archive": args.archive}, indent=2))
    return 0


def cmd_retention_plan(settings: Settings, args: argparse.Namespace) -> int:
    """What a retention sweep would erase at a given time, store by store; nothing is erased."""
    from lifecycle.retention_plan import parse_time, plan_lines

    plan_lines(settings, parse_time(args.at) if args.at else None, say)
    return 0


def cmd_openapi(settings: Settings, args: argparse.Namespace) -> int:
    """The HTTP API's OpenAPI 3.1 document (what a worker serves at /openapi.json)."""
    from lifecycle.core.policy import load_policy
    from lifecycle.schemas.catalog import load_catalog
    from lifecycle.streams.http.openapi import document_bytes

    body = document_bytes(load_catalog(), list(load_policy(settings.retention_policy).categories))
    if args.out:
        Path(args.out).write_bytes(body)
        say(f"wrote {args.out}")
    else:
        sys.stdout.buffer.write(body)
    return 0


def cmd_records(settings: Settings, args: argparse.Namespace) -> int:
    """Write the record of processing (GDPR Art. 30) as Markdown and JSON (lifecycle/records.py)."""
    from lifecycle.records import build_record, load_processing, problems, registered_stores, to_markdown, write

    processing = load_processing()
    record = build_record(settings, registered_stores(settings), processing)
    for problem in problems(record, processing):
        say(f"record of processing: {problem}")
    if args.out:
        for path in write(record, Path(args.out)):
            say(f"wrote {path}")
    else:
        print(to_markdown(record), end="")
    return 0


def cmd_datamap(settings: Settings, args: argparse.Namespace) -> int:
    """Print the data map: each personal field of each record, its category and its retention."""
    from lifecycle.core.policy import load_policy
    from lifecycle.schemas.catalog import load_catalog
    from lifecycle.schemas.personal import datamap

    rows = datamap(load_catalog(), load_policy(settings.retention_policy))
    if args.json:
        say(json.dumps(rows, indent=2))
        return 0
    columns = ("topic", "record", "field", "category", "retention")
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in columns]
    for line in [dict(zip(columns, columns, strict=True)), *rows]:
        say("  ".join(line[c].ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    return 0


def add_commands(sub: Any) -> None:
    openapi = sub.add_parser("openapi", help="the HTTP API's OpenAPI 3.1 document (served at /openapi.json)")
    openapi.add_argument("--out", default=None, help="write it to this file (docs/openapi.json)")
    openapi.set_defaults(fn=cmd_openapi)
    records = sub.add_parser("records", help="the record of processing (GDPR Art. 30), Markdown and JSON")
    records.add_argument("--out", default=None, help="a folder for record-of-processing.md and .json "
                                                     "(default: the Markdown on standard output)")
    records.set_defaults(fn=cmd_records)
    datamap = sub.add_parser("datamap", help="the personal fields of every record: category and retention")
    datamap.add_argument("--json", action="store_true", help="JSON instead of a table")
    datamap.set_defaults(fn=cmd_datamap)
    export = sub.add_parser("export", help="everything held about an account, as JSON, or its access archive")
    export.add_argument("account")
    export.add_argument("--archive", default=None, metavar="FILE",
                        help="gather what every store holds through an access order and write the zip here")
    export.add_argument("--wait", type=float, default=120.0, help="seconds to wait for every store (--archive)")
    export.set_defaults(fn=cmd_export, reads="database")
    retention = sub.add_parser("retention", help="retention windows").add_subparsers(dest="action", required=True)
    plan = retention.add_parser("plan", help="what a sweep would erase, store by store, without erasing")
    plan.add_argument("--at", help="the time to plan for: epoch ms or ISO 8601 (default: the pipeline's now)")
    plan.set_defaults(fn=cmd_retention_plan, reads="database")
