"""`lifecycle emit` and `lifecycle dlq`: events in, and the dead letters of those refused."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from lifecycle.cli.common import need_broker, say
from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError

__all__ = ["add_commands"]

EMIT_BATCH = 2000


def cmd_emit(settings: Settings, args: argparse.Namespace) -> int:
    """Validate and send JSON events (one object or an array per line) from a file or stdin, their
    personal fields sealed (keys from the pipeline's database, or LIFECYCLE_KEYS_URL and its token)."""
    need_broker(settings, "emit")
    from lifecycle.connectors.emitter import Emitter
    from lifecycle.schemas.errors import ValidationFailed

    source = sys.stdin if args.file == "-" else open(args.file)
    sent = failed = 0
    with source, Emitter(settings) as emitter:
        batch: list[Any] = []
        for lineno, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                say(f"line {lineno}: not JSON")
                failed += 1
                continue
            for event in doc if isinstance(doc, list) else [doc]:
                try:
                    batch.append(emitter.check(event))
                except ValidationFailed as exc:
                    failed += 1
                    say(f"line {lineno}: " + "; ".join(f"{e.field}: {e.problem}" for e in exc.errors))
            if len(batch) >= EMIT_BATCH:  # one key request per batch, not per event
                sent += len(emitter.emit_valid(batch))
                batch = []
        sent += len(emitter.emit_valid(batch)) if batch else 0
    say(f"sent {sent}, refused {failed}")
    return 1 if failed else 0


def cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print dead letters: origin and reason, never the original bytes."""
    need_broker(settings, "dlq list")
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
            say(json.dumps(row))
            shown += 1
            if shown >= args.limit:
                break
    finally:
        consumer.close()
    say(f"{shown} dead letter(s)")
    return 0


def _letter_opener(settings: Settings) -> Callable[[Any, dict[str, Any]], tuple[bytes | None, bytes | None] | None]:
    """Opens each letter's sealed original with the pipeline's data keys (docs/crypto-shredding.md)."""
    state: dict[str, Any] = {}

    def opener(msg: Any, letter: dict[str, Any]) -> tuple[bytes | None, bytes | None] | None:
        from lifecycle.streams.runtime.sealing import open_letter

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
    need_broker(settings, "dlq replay")
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
    say(f"replayed {replayed}, skipped {skipped}")
    return 0


def add_commands(sub: Any) -> None:
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
