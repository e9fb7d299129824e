"""The `lifecycle` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError

__all__ = ["main"]


def _say(line: str) -> None:
    print(line, flush=True)


def _in_transaction(settings: Settings, fn: Any) -> Any:
    """``await fn(conn)`` in one transaction on a connection of its own to the pipeline's database."""
    import asyncio

    from lifecycle.streams.db import connect

    async def run() -> Any:
        conn = await connect(settings.postgres_dsn or "")
        try:
            async with conn.transaction():
                return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def _need_broker(settings: Settings, command: str) -> None:
    if not settings.kafka_bootstrap:
        raise LifecycleError(
            f"`lifecycle {command}` needs LIFECYCLE_KAFKA_BOOTSTRAP; "
            "`lifecycle up` starts an embedded broker if you have none"
        )


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from lifecycle.supervisor import supervised_pipeline

    try:
        with supervised_pipeline(settings, _say) as supervisor:
            _say(f"up: broker {supervisor.live.kafka_bootstrap}; press Ctrl-C to stop")
            while True:
                supervisor.watch()
                time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from lifecycle.demo import run_demo

    serve = args.serve if args.serve is not None else 600 if sys.stdin.isatty() and sys.stdout.isatty() else 0
    return run_demo(settings, _say, accounts=args.accounts, visitors=args.visitors, serve_s=serve)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    _need_broker(settings, "worker")
    import faust

    from lifecycle.connectors.stores import database_grants, retention_categories
    from lifecycle.console import register_console
    from lifecycle.streams.app import build_app

    pipeline = build_app(settings, swept_by=retention_categories, store_grants=database_grants())
    register_console(pipeline)
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
    return 0


def cmd_topics_apply(settings: Settings, args: argparse.Namespace) -> int:
    _need_broker(settings, "topics apply")
    from lifecycle.topics import apply_topics, load_spec

    report = apply_topics(settings, load_spec(settings.topic_spec, args.profile or settings.topic_profile))
    for line in report.lines():
        _say(line)
    return 2 if (report.drift and args.strict) else 0


def cmd_emit(settings: Settings, args: argparse.Namespace) -> int:
    """Validate and send JSON events (one object or an array per line) from a file or stdin, their
    personal fields sealed (keys from the pipeline's database, or LIFECYCLE_KEYS_URL and its token)."""
    _need_broker(settings, "emit")
    from lifecycle.connectors.emitter import Emitter
    from lifecycle.schemas.errors import ValidationFailed

    source = sys.stdin if args.file == "-" else open(args.file)
    sent = failed = 0
    with source, Emitter(settings) as emitter:
        for lineno, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                _say(f"line {lineno}: not JSON")
                failed += 1
                continue
            for event in doc if isinstance(doc, list) else [doc]:
                try:
                    emitter.emit(event)
                    sent += 1
                except ValidationFailed as exc:
                    failed += 1
                    _say(f"line {lineno}: " + "; ".join(f"{e.field}: {e.problem}" for e in exc.errors))
    _say(f"sent {sent}, refused {failed}")
    return 1 if failed else 0


def cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print dead letters: origin and reason, never the original bytes."""
    _need_broker(settings, "dlq list")
    from kafka import KafkaConsumer

    from lifecycle.schemas.codec import Codec
    from lifecycle.schemas.registry import make_registry

    codec = Codec(make_registry(settings.schema_registry_url), topic_prefix=settings.topic_prefix)
    consumer = KafkaConsumer(
        settings.topic("dead-letters"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(args.wait_s * 1000),
        **settings.kafka_client_kwargs(),
    )
    shown = 0
    try:
        for msg in consumer:
            letter = codec.decode(msg.value).value
            row = {
                "origin": f"{letter['original_topic']}[{letter['original_partition']}]@{letter['original_offset']}",
                "reason": letter["reason"],
                "stage": letter["stage"],
                "bytes": len(letter["original_value"] or b""),
            }
            _say(json.dumps(row))
            shown += 1
            if shown >= args.limit:
                break
    finally:
        consumer.close()
    _say(f"{shown} dead letter(s)")
    return 0


def cmd_connector(settings: Settings, args: argparse.Namespace) -> int:
    """Run one downstream store's connector until SIGTERM or Ctrl-C."""
    _need_broker(settings, "connector")
    import signal
    import threading

    from lifecycle.connectors.base import run_connector
    from lifecycle.connectors.base.metrics import ConnectorMetrics
    from lifecycle.connectors.base.runner import categories_of
    from lifecycle.connectors.stores import make_sink
    from lifecycle.core.keys import open_keyring
    from lifecycle.core.pgroles import as_component

    # Refused here when empty or not the database's, before any order is read; with the store's
    # own role, which reads the fingerprints and nothing else of the key tables.
    open_keyring(as_component(settings, f"store-{args.store}"), read_only=True)
    sink = make_sink(args.store, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = ConnectorMetrics.create(sink.name, categories_of(sink))
    if settings.metrics_port is not None:
        metrics.serve(settings.http_host, settings.metrics_port)
        _say(f"connector {sink.name}: metrics on http://{settings.http_host}:{settings.metrics_port}/metrics")
    _say(f"connector {sink.name}: consuming {settings.topic('tombstones')}, {settings.topic('retention-orders')} "
         f"and {settings.topic('access-orders')}")
    run_connector(settings, sink, stop, metrics)
    return 0


def cmd_erasure_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the account's erasures, store by store (by keyed hash: no personal data stored)."""
    if not settings.postgres_dsn:
        raise LifecycleError("`lifecycle erasure status` needs LIFECYCLE_POSTGRES_DSN")
    import asyncio

    from lifecycle.core.keys import open_keyring
    from lifecycle.streams.db import connect
    from lifecycle.streams.erasure import erasure_status

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

    count = _in_transaction(settings, lambda conn: reverify(conn, ids))
    _say(f"{count} completed erasure(s) due for verification at the worker's next tick")
    return 0 if count or not ids else 1


def cmd_erasure_replay(settings: Settings, args: argparse.Namespace) -> int:
    """The restore guard (streams/replay.py): ask for a replay (and wait for it), or list them."""
    import datetime as dt
    import time

    from lifecycle.streams.replay import replay_report, request_replay

    if args.action == "replays":
        print(json.dumps({"replays": _in_transaction(settings, replay_report)}, indent=2))
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

    asked = _in_transaction(settings, ask)
    print(f"replay {asked['replay_id']}: {asked['proofs']} completed erasure(s) to check on {args.store} at the "
          "worker's next tick", file=sys.stderr, flush=True)  # stdout holds the JSON answer alone
    end = time.monotonic() + args.wait
    while args.wait:
        [mine] = [r for r in _in_transaction(settings, replay_report) if r["replay_id"] == asked["replay_id"]]
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


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Show the hash keys' fingerprints, or rotate: a new current key, the older ones kept."""
    from lifecycle.core.keys import key_file, open_keyring, rotate_key_file

    if args.action == "rotate":
        if not settings.postgres_dsn:
            raise LifecycleError("`lifecycle keys rotate` needs LIFECYCLE_POSTGRES_DSN")
        import psycopg

        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            keys = rotate_key_file(settings, conn)
        _say(f"new current key {keys.fingerprints()[0]} in {key_file(settings)}; restart every worker and connector")
    else:  # init creates the key files when there are none; fingerprint never does
        if args.action == "init":  # the master key of the data keys too (docs/crypto-shredding.md)
            from lifecycle.core.crypto import init_master_key
            from lifecycle.core.datakeys import open_data_keys
            from lifecycle.core.keys import init_key_file

            init_key_file(settings)
            init_master_key(settings)
            from lifecycle.proofs import load_signing_key
            from lifecycle.streams.http_auth import init_tokens_file

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
    from lifecycle.streams.context import Context
    from lifecycle.streams.metrics import Metrics

    catalog = load_catalog()
    keys = open_keyring(settings, create=False)
    return Context(settings=settings, clock=make_clock(settings.clock), keys=keys,
                   codec=Codec(make_registry(settings.schema_registry_url, catalog), catalog,
                               topic_prefix=settings.topic_prefix),
                   metrics=Metrics.create(CollectorRegistry(), catalog), policy=load_policy(settings.retention_policy),
                   data_keys=open_data_keys(settings, keys, create=False),
                   orders=load_order_signer(settings, create=False))


def _export_archive(settings: Settings, args: argparse.Namespace) -> int:
    """Open (or find) the account's access request, wait for every store, write the zip."""
    import time
    from pathlib import Path

    from lifecycle.streams.access import access_state, open_access

    ctx = _ledger_context(settings)
    state = _in_transaction(settings, lambda conn: open_access(conn, ctx, args.account))
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
        state = _in_transaction(settings, lambda conn: access_state(conn, ctx, args.account)) or state
    Path(args.archive).write_bytes(state.pop("archive"))
    print(json.dumps({**state, "archive": args.archive}, indent=2))
    return 0


def cmd_retention_plan(settings: Settings, args: argparse.Namespace) -> int:
    """What a retention sweep would erase at a given time, store by store; nothing is erased."""
    from lifecycle.retention_plan import parse_time, plan_lines

    plan_lines(settings, parse_time(args.at) if args.at else None, _say)
    return 0


def _letter_opener(settings: Settings) -> Callable[[Any, dict[str, Any]], tuple[bytes | None, bytes | None] | None]:
    """Opens each letter's sealed original with the pipeline's data keys (docs/crypto-shredding.md)."""
    state: dict[str, Any] = {}

    def opener(msg: Any, letter: dict[str, Any]) -> tuple[bytes | None, bytes | None] | None:
        from lifecycle.streams.sealing import open_letter

        sealed_for = next((v.decode() for k, v in msg.headers or [] if k == "lifecycle.dlq.sealed_for"), None)
        if sealed_for is None:
            return letter["original_key"], letter["original_value"]
        if "keys" not in state:
            if not settings.postgres_dsn:
                raise LifecycleError("sealed dead letters need the pipeline's database: set LIFECYCLE_POSTGRES_DSN")
            import psycopg

            from lifecycle.core.datakeys import open_data_keys

            state["keys"] = open_data_keys(settings, create=False)
            state["conn"] = psycopg.connect(settings.postgres_dsn, autocommit=True, connect_timeout=10)
        return open_letter(state["conn"], state["keys"], letter["original_key"], letter["original_value"], sealed_for)

    return opener


def cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Send dead letters' original bytes back to their original topic, after a fix.

    Reads with its own consumer group (`<prefix>dlq-replay`), so each letter is replayed once;
    events are idempotent by event id, so a replayed event that had been applied changes nothing.
    """
    _need_broker(settings, "dlq replay")
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from lifecycle.schemas.codec import Codec
    from lifecycle.schemas.registry import make_registry

    codec = Codec(make_registry(settings.schema_registry_url), topic_prefix=settings.topic_prefix)
    consumer = KafkaConsumer(
        settings.topic("dead-letters"), bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}dlq-replay", enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=settings.broker_session_timeout_s * 1000, heartbeat_interval_ms=1000,
        **settings.kafka_client_kwargs())
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", **settings.kafka_client_kwargs())
    opener = _letter_opener(settings)
    replayed = skipped = 0
    try:
        deadline = time.monotonic() + args.wait_s
        started_ms = time.time_ns() // 1_000_000
        records: list[Any] = []
        while not consumer.assignment() and time.monotonic() < deadline:
            records += [m for batch in consumer.poll(timeout_ms=200).values() for m in batch]
        if not consumer.assignment():
            raise LifecycleError("no dead-letters partition was assigned in time (is another replay running?)")
        # Replay until the topic has been quiet for a while (this broker's ListOffsets(latest) is
        # not reliable enough to read "up to the end").
        quiet_polls = 0
        records += [m for batch in consumer.poll(timeout_ms=500).values() for m in batch]
        while True:
            for msg in records:
                tp = TopicPartition(msg.topic, msg.partition)
                if tp in consumer.paused():
                    continue
                if msg.timestamp >= started_ms:  # written after this replay began (maybe by it): next run
                    consumer.seek(tp, msg.offset)
                    consumer.pause(tp)
                    continue
                letter = codec.decode(msg.value, topic="dead-letters").value
                wanted = (not args.reason or letter["reason"].startswith(args.reason)) and (
                    not args.topic or letter["original_topic"] == settings.topic(args.topic))
                if not wanted or letter["original_value"] is None:
                    skipped += 1
                    continue
                original = opener(msg, letter)
                if original is None:  # its subject was erased since: nothing left to replay
                    skipped += 1
                    continue
                producer.send(letter["original_topic"], key=original[0], value=original[1],
                              headers=[("lifecycle.replayed-from", f"{msg.partition}:{msg.offset}".encode())]).get(30)
                replayed += 1
            quiet_polls = 0 if records else quiet_polls + 1
            if quiet_polls >= 4 or consumer.paused() == consumer.assignment() or time.monotonic() > deadline + 300:
                break
            records = [m for batch in consumer.poll(timeout_ms=500).values() for m in batch]
        producer.flush()
        consumer.commit()
    finally:
        consumer.close()
        producer.close()
    _say(f"replayed {replayed}, skipped {skipped}")
    return 0


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
    _say(public if args.raw else json.dumps({"algorithm": "Ed25519", "public_key": public,
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
            _say(line)
        if "backups_expire_by" in body:
            _say(f"backups: every backup that may hold the subject expires by {body['backups_expire_by']}"
                 if body["backups_expire_by"] else
                 f"backups: no retention declared by {', '.join(body['backups_undeclared'])}: when their backups "
                 "expire is not known")
        _say(f"replays on restored stores: {body.get('replays', 0)}"
             + (f", the last at {body['last_replayed_at']}" if body.get("last_replayed_at") else ""))
        if (extension := body.get("deadline_extension")):
            _say(f"deadline extended by {extension['months']} month(s) on {extension['extended_at']} "
                 f"(Art. 12(3)): {extension['reason']}")
        _say(f"valid: erasure {body['request_id']} completed {body['completed_at']}, "
             f"{len(body['stores'])} stores, {body['items_erased']} items, keys destroyed {body['keys_destroyed_at']}")
        return 0
    key = proofs.load_signing_key(settings, create=args.action != "key" or not args.no_create)
    if args.action == "key":
        info = proofs.public_key_text(key)
        _say(info["public_key"] if args.raw else json.dumps(info, indent=2))
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
        _say(signer.text)
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
    _say(f"{args.name}: erasures opened from now on do not wait for it; {pending} open erasure(s) still do "
         "(each completes only once it answers)")
    return 0


def cmd_store_backups(settings: Settings, args: argparse.Namespace) -> int:
    """Record how long a store keeps its backups, as its owner declares it (docs/erasure.md)."""
    import psycopg

    from lifecycle.store_registry import declare_backups

    with psycopg.connect(settings.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
        declare_backups(settings.postgres_dsn or "", conn, args.name, args.days)
    _say(f"{args.name}: backups kept {args.days} day(s); certificates state when those that may hold an erased "
         "subject expire")
    return 0


def cmd_store_list(settings: Settings, args: argparse.Namespace) -> int:
    """Every store the pipeline knows: shipped or not, waited for, its key, what it has not answered."""
    import psycopg

    from lifecycle.store_registry import listing

    with psycopg.connect(settings.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
        rows = listing(conn)
    if args.json:
        _say(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return 0
    _say(f"{'store':<20} {'kind':<8} {'joined by':<17} {'waited for':<10} {'key':<8} {'pending':>7} "
         f"{'backups':>8}  last answer")
    for r in rows:
        joined_by = {"config": "ERASURE_STORES", "registered": "store add", "key": "-"}.get(r.origin, r.origin)
        _say(f"{r.store:<20} {'shipped' if r.shipped else 'foreign':<8} {joined_by:<17} "
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

    _say(json.dumps({store: {"algorithm": "Ed25519", "public_key": base64.b64encode(k.public).decode(),
                             "fingerprint": fingerprint(k.public)} if k.public else {"legacy_hmac": True}
                     for store, k in sorted(keys.items())}, indent=2))
    return 0


def cmd_request_extend(settings: Settings, args: argparse.Namespace) -> int:
    """Extend an open access or erasure request's deadline once, by one or two months (GDPR Art.
    12(3)); the person is told through the notice on request-notices (streams/extensions.py)."""
    import asyncio
    import datetime as dt

    from lifecycle.streams.db import connect
    from lifecycle.streams.extensions import ExtensionRefused, extend

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
    _say(json.dumps(done, indent=2))
    return 0


def cmd_openapi(settings: Settings, args: argparse.Namespace) -> int:
    """The HTTP API's OpenAPI 3.1 document (what a worker serves at /openapi.json)."""
    from lifecycle.core.policy import load_policy
    from lifecycle.schemas.catalog import load_catalog
    from lifecycle.streams.openapi import document_bytes

    body = document_bytes(load_catalog(), list(load_policy(settings.retention_policy).categories))
    if args.out:
        Path(args.out).write_bytes(body)
        _say(f"wrote {args.out}")
    else:
        sys.stdout.buffer.write(body)
    return 0


def cmd_records(settings: Settings, args: argparse.Namespace) -> int:
    """Write the record of processing (GDPR Art. 30) as Markdown and JSON (lifecycle/records.py)."""
    from lifecycle.records import build_record, load_processing, problems, registered_stores, to_markdown, write

    processing = load_processing()
    record = build_record(settings, registered_stores(settings), processing)
    for problem in problems(record, processing):
        _say(f"record of processing: {problem}")
    if args.out:
        for path in write(record, Path(args.out)):
            _say(f"wrote {path}")
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
        _say(json.dumps(rows, indent=2))
        return 0
    columns = ("topic", "record", "field", "category", "retention")
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in columns]
    for line in [dict(zip(columns, columns, strict=True)), *rows]:
        _say("  ".join(line[c].ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifecycle", description="Privacy-policy data lifecycle pipeline.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="embedded stack + topics + worker, in the foreground").set_defaults(fn=cmd_up)
    demo = sub.add_parser("demo", help="`up`, driven by simulated upstream traffic, ending with a report")
    demo.add_argument("--accounts", type=int, default=200)
    demo.add_argument("--visitors", type=int, default=300)
    demo.add_argument("--serve", type=int, default=None, metavar="SECONDS",
                      help="keep the pipeline and its console running this long after the report (Ctrl-C stops "
                           "sooner; default: 600 in a terminal, else 0)")
    demo.set_defaults(fn=cmd_demo)
    sub.add_parser("worker", help="one stream worker against LIFECYCLE_KAFKA_BOOTSTRAP").set_defaults(fn=cmd_worker)
    request = sub.add_parser("request", help="access and erasure requests").add_subparsers(dest="action",
                                                                                         required=True)
    extend = request.add_parser("extend", help="extend an open request's deadline once, by 1 or 2 months "
                                               "(GDPR Art. 12(3)); the person is told with the reason")
    extend.add_argument("request_id")
    extend.add_argument("--months", type=int, required=True, help="1 or 2")
    extend.add_argument("--reason", required=True, help="why, as the person will be told (no personal data)")
    extend.add_argument("--by", required=True, help="who decided: a role or a name of the controller's staff")
    extend.set_defaults(fn=cmd_request_extend, reads="database")
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
    topics = sub.add_parser("topics", help="topic administration").add_subparsers(dest="action", required=True)
    apply = topics.add_parser("apply", help="create every topic of deploy/topics.yaml; report drift")
    apply.add_argument("--profile", default=None,
                       help="a profile of the spec, e.g. production (default: LIFECYCLE_TOPIC_PROFILE)")
    apply.add_argument("--strict", action="store_true", help="exit 2 when drift is found")
    apply.set_defaults(fn=cmd_topics_apply)
    emit = sub.add_parser("emit", help="validate and send JSON events (JSON lines) from FILE or -")
    emit.add_argument("file", nargs="?", default="-")
    emit.set_defaults(fn=cmd_emit, reads="broker")
    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="action", required=True)
    dlq_list = dlq.add_parser("list", help="print dead letters (origin and reason)")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.add_argument("--wait-s", type=float, default=3.0)
    dlq_list.set_defaults(fn=cmd_dlq_list, reads="broker")
    replay = dlq.add_parser("replay", help="send dead letters back to their original topic")
    replay.add_argument("--reason", default=None, help="only letters whose reason starts with this code")
    replay.add_argument("--topic", default=None, help="only letters from this contract topic")
    replay.add_argument("--wait-s", type=float, default=30.0, help="how long to wait for the group join")
    replay.set_defaults(fn=cmd_dlq_replay, reads="broker")
    export = sub.add_parser("export", help="everything held about an account, as JSON, or its access archive")
    export.add_argument("account")
    export.add_argument("--archive", default=None, metavar="FILE",
                        help="gather what every store holds through an access order and write the zip here")
    export.add_argument("--wait", type=float, default=120.0, help="seconds to wait for every store (--archive)")
    export.set_defaults(fn=cmd_export, reads="database")
    connector = sub.add_parser("connector", help="run one downstream store's erasure connector")
    connector.add_argument("store", help="postgres, redis, files or mailing-list")
    connector.set_defaults(fn=cmd_connector)
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
    keys = sub.add_parser("keys", help="the hash key behind every pseudonym").add_subparsers(dest="action",
                                                                                          required=True)
    keys_init = keys.add_parser("init", help="create the key files if there are none; print fingerprints")
    keys_init.add_argument("--hand-out", default=None, metavar="DIR",
                           help="then give each party a folder of its own secrets alone (lifecycle/handout.py)")
    keys_init.set_defaults(fn=cmd_keys)
    keys.add_parser("fingerprint", help="the fingerprints of the key ring, current first").set_defaults(
        fn=cmd_keys, reads="database")
    keys.add_parser("rotate", help="a new current key; older ones stay for matching").set_defaults(fn=cmd_keys)
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
    retention = sub.add_parser("retention", help="retention windows").add_subparsers(dest="action", required=True)
    plan = retention.add_parser("plan", help="what a sweep would erase, store by store, without erasing")
    plan.add_argument("--at", help="the time to plan for: epoch ms or ISO 8601 (default: the pipeline's now)")
    plan.set_defaults(fn=cmd_retention_plan, reads="database")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        reads = getattr(args, "reads", None)
        if reads is None:
            return int(args.fn(settings, args) or 0)
        from lifecycle.locate import located

        # Commands that read state find the stack `up` runs (or its stopped database) by themselves.
        with located(settings, broker=reads == "broker", database=reads == "database",
                     say=lambda line: print(line, file=sys.stderr, flush=True)) as found:
            return int(args.fn(found, args) or 0)
    except LifecycleError as exc:
        print(f"lifecycle: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
