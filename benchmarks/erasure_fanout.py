#!/usr/bin/env python3
"""Erasure fan-out across the four stores on the embedded stack: closure -> erasure `complete`
(every store erased and verified), one closure at a time on an idle pipeline (p50, p99), and a
burst of closures sustained end to end, with the CPU one closure costs in every process and the
rate that cost allows this machine's cores; the pipeline's CPU while idle.

    .venv/bin/python benchmarks/erasure_fanout.py [--idle 100] [--burst 10000] [--fetch-wait-ms W]

Baseline, measured in the same run on the same broker: one produce -> consume hop (p50). An
erasure crosses about ten hops (closure -> worker; order -> every store; ack -> worker; verify
order -> every store; verify ack -> worker; each order through the outbox relay), so its idle
latency is printed as a multiple of that hop, and split by stage from the timestamps of the records
each stage produced. The closures are produced as an upstream service would (the emitter SDK);
completion is read from PostgreSQL every 2 ms. ``--fetch-wait-ms`` sets every consumer's fetch wait
(on the embedded broker it trades hop latency for idle polling: docs/performance.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu import CpuMeter  # noqa: E402

from lifecycle.connectors.emitter import Emitter  # noqa: E402
from lifecycle.core.config import Settings  # noqa: E402
from lifecycle.core.keys import load_keyring  # noqa: E402
from lifecycle.supervisor import running_pipeline  # noqa: E402

T0 = 1_767_225_600_000


def _event(kind: str, at: int, account: str, **fields: object) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "event_type": kind, "occurred_at": at, "account_id": account,
            "source": "bench", **fields}


def hop_p50(settings: Settings, n: int = 200) -> float:
    topic = settings.topic("dead-letters")  # an existing topic nobody else writes to here
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="latest",
                             fetch_max_wait_ms=10, session_timeout_ms=6000)
    consumer.poll(timeout_ms=2000)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    samples = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            producer.send(topic, b"x").get(5)
            got = False
            while not got:
                got = any(consumer.poll(timeout_ms=100).values())
            samples.append(time.perf_counter() - start)
    finally:
        producer.close()
        consumer.close()
    return statistics.median(samples)


def idle_cpu(seconds: float) -> dict[str, float]:
    """Share of one core each role used over ``seconds`` with nothing to do."""
    meter = CpuMeter()
    time.sleep(seconds)
    return {name: used / seconds for name, used in meter.used().items() if name != "benchmark"}


def _register(live: Settings, accounts: list[str]) -> None:
    for acc in accounts:
        folder = live.files_dir / acc
        folder.mkdir(parents=True)
        (folder / "doc.txt").write_text("x")
    with Emitter(live) as emitter:
        for acc in accounts:
            emitter.emit(_event("account.registered", T0, acc, email=f"{acc}@example.test", first_name="B",
                                last_name="M"))
            emitter.emit(_event("session.started", T0 + 1, acc, session_id=f"{acc}-s", ip="198.51.100.1",
                                login_method="password"))


def _wait_registered(conn: psycopg.Connection[Any], n: int, deadline_s: float = 600) -> None:
    end = time.monotonic() + deadline_s
    while conn.execute("SELECT count(*) FROM accounts").fetchone()[0] < n:  # type: ignore[index]
        if time.monotonic() > end:
            raise SystemExit("accounts not registered in time")
        time.sleep(0.2)


@dataclasses.dataclass
class Idle:
    """One closure on the idle pipeline: wall times (ms) of its closure and of its completion,
    keyed by the account's pseudonym."""

    account_hash: str
    closed_ms: float
    complete_ms: float


def idle_latencies(live: Settings, conn: psycopg.Connection[Any], accounts: list[str]) -> list[Idle]:
    keys = load_keyring(live, create=False)
    out = []
    with Emitter(live) as emitter:
        for acc in accounts:
            account_hash = keys.pseudonym(acc)
            start = time.time() * 1000
            emitter.emit(_event("account.closed", T0 + 60_000, acc))
            emitter.flush()
            end = time.monotonic() + 30
            while conn.execute("SELECT 1 FROM erasure_requests WHERE account_hash = %s AND state = 'complete'",
                               (account_hash,)).fetchone() is None:
                if time.monotonic() > end:
                    raise SystemExit(f"erasure of {acc} not complete within 30 s")
                time.sleep(0.002)
            out.append(Idle(account_hash, start, time.time() * 1000))
            time.sleep(0.05)
    return out


STAGES = ("closure -> erase orders", "erase orders -> last store's ack", "last ack -> verify orders",
          "verify orders -> last store's verification", "last verification -> complete")


def stage_split(live: Settings, conn: psycopg.Connection[Any], idle: list[Idle]) -> dict[str, list[float]]:
    """Where the idle path spends its time, from the timestamps of the records each stage
    produced (orders on `tombstones`, answers on `erasure-acks`): ms per stage, one value per closure."""
    from kafka import TopicPartition

    from lifecycle.schemas.codec import Codec
    from lifecycle.schemas.registry import make_registry

    request_of = {h: str(r) for r, h in conn.execute("SELECT request_id, account_hash FROM erasure_requests")}
    wanted = {request_of[i.account_hash]: i for i in idle}
    codec = Codec(make_registry(live.schema_registry_url), topic_prefix=live.topic_prefix)
    consumer = KafkaConsumer(bootstrap_servers=live.kafka_bootstrap, enable_auto_commit=False)
    times: dict[tuple[str, str, str], list[int]] = {}  # (request, topic, action) -> record timestamps
    try:
        for topic in ("tombstones", "erasure-acks"):
            parts = [TopicPartition(live.topic(topic), p) for p in consumer.partitions_for_topic(live.topic(topic))]
            consumer.assign(parts)
            consumer.seek_to_beginning()
            ends = consumer.end_offsets(parts)
            deadline = time.monotonic() + 60
            while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                    for rec in records:
                        try:
                            value = codec.decode(rec.value, topic=topic).value
                        except Exception:  # an access answer or a retention ack: not this path
                            continue
                        rid = value.get("request_id")
                        if rid in wanted and "action" in value:
                            times.setdefault((rid, topic, value["action"]), []).append(rec.timestamp)
    finally:
        consumer.close()
    split: dict[str, list[float]] = {name: [] for name in STAGES}
    for rid, closure in wanted.items():
        try:
            marks = [closure.closed_ms, min(times[(rid, "tombstones", "erase")]),
                     max(times[(rid, "erasure-acks", "erase")]), min(times[(rid, "tombstones", "verify")]),
                     max(times[(rid, "erasure-acks", "verify")]), closure.complete_ms]
        except KeyError:
            continue  # a closure whose records were not all found (none expected)
        for name, a, b in zip(STAGES, marks, marks[1:], strict=False):
            split[name].append(b - a)
    return split


def burst(live: Settings, conn: psycopg.Connection[Any], accounts: list[str]) -> tuple[float, dict[str, float]]:
    """(closures/s end to end, CPU milliseconds per closure by role, the benchmark's own included)."""
    meter = CpuMeter()
    before = conn.execute("SELECT count(*) FROM erasure_requests WHERE state = 'complete'").fetchone()[0]  # type: ignore[index]
    start = time.perf_counter()
    with Emitter(live) as emitter:
        for acc in accounts:
            emitter.emit(_event("account.closed", T0 + 60_000, acc))
    end = time.monotonic() + 900
    shown = time.monotonic()
    while conn.execute("SELECT count(*) FROM erasure_requests WHERE state = 'complete'"
                       ).fetchone()[0] - before < len(accounts):  # type: ignore[index]
        if time.monotonic() > end:
            raise SystemExit("burst not complete within 900 s")
        if time.monotonic() - shown > 2:  # progress: which stage the burst is waiting on
            shown = time.monotonic()
            rows = conn.execute("SELECT p.store, count(*) FILTER (WHERE p.status <> 'pending'), "
                                "count(p.verified_at) FROM erasure_progress p GROUP BY 1 ORDER BY 1").fetchall()
            opened = conn.execute("SELECT count(*) FROM erasure_requests").fetchone()[0]  # type: ignore[index]
            print(f"  {time.perf_counter() - start:5.1f} s: opened {opened}, acked/verified "
                  + ", ".join(f"{s} {a}/{v}" for s, a, v in rows), file=sys.stderr)
        time.sleep(0.05)
    elapsed, used = time.perf_counter() - start, meter.used()
    print("  CPU during the burst, share of one core: " +
          ", ".join(f"{role} {cpu / elapsed * 100:.0f}%" for role, cpu in sorted(used.items())), file=sys.stderr)
    return len(accounts) / elapsed, {role: cpu / len(accounts) * 1000 for role, cpu in used.items()}


def signature_us(n: int = 2000) -> tuple[float, float]:
    """Ed25519 sign and verify of an order-sized message on this machine, microseconds each
    (`cryptography`, as the pipeline signs orders and the stores sign their answers)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key, message = Ed25519PrivateKey.generate(), b"o" * 300
    public = key.public_key()
    start = time.perf_counter()
    signature = b""
    for _ in range(n):
        signature = key.sign(message)
    signed = time.perf_counter()
    for _ in range(n):
        public.verify(signature, message)
    return (signed - start) / n * 1e6, (time.perf_counter() - signed) / n * 1e6


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, round(len(values) * q) - 1))]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--idle", type=int, default=100, help="closures one at a time on the idle pipeline")
    p.add_argument("--burst", type=int, default=10_000, help="closures at once")
    p.add_argument("--idle-cpu-s", type=float, default=20.0)
    p.add_argument("--fetch-wait-ms", type=int, default=None,
                   help="every consumer's fetch wait (LIFECYCLE_FETCH_WAIT_MS; default: the setting's)")
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    settings = dataclasses.replace(Settings.from_env({"LIFECYCLE_STATE_DIR": str(state)}), clock="event")
    if args.fetch_wait_ms is not None:
        settings = dataclasses.replace(settings, fetch_wait_ms=args.fetch_wait_ms)
    with running_pipeline(settings, lambda line: print(line, file=sys.stderr)) as (live, _):
        idle_accounts = [f"acc-i{i:05d}" for i in range(args.idle)]
        burst_accounts = [f"acc-b{i:05d}" for i in range(args.burst)]
        print(f"registering {len(idle_accounts) + len(burst_accounts)} accounts ...", file=sys.stderr)
        _register(live, idle_accounts + burst_accounts)
        with psycopg.connect(live.postgres_dsn or "", autocommit=True) as conn:
            _wait_registered(conn, len(idle_accounts) + len(burst_accounts))
            time.sleep(3)
            cpu = idle_cpu(args.idle_cpu_s)
            baseline = hop_p50(live)
            print("idle closures ...", file=sys.stderr)
            idle = idle_latencies(live, conn, idle_accounts)
            split = stage_split(live, conn, idle)
            print("burst ...", file=sys.stderr)
            rate, cost = burst(live, conn, burst_accounts)
            stores = [r[0] for r in conn.execute("SELECT store FROM erasure_stores WHERE active ORDER BY 1")]
    lat = sorted((i.complete_ms - i.closed_ms) / 1000 for i in idle)
    p50, p99 = statistics.median(lat), _pct(lat, 0.99)
    print(f"stores: {', '.join(stores)}; every consumer's fetch wait {settings.fetch_wait_ms} ms")
    print(f"baseline one broker hop p50: {baseline * 1000:.1f} ms")
    print(f"idle closure -> complete ({len(lat)} one at a time): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
          f" = {p50 / baseline:.1f}x / {p99 / baseline:.1f}x a hop")
    print("  where the idle path spends it (from the records' timestamps), p50 / p99 ms:")
    for name, values in split.items():
        values.sort()
        if values:
            print(f"    {name}: {statistics.median(values):.0f} / {_pct(values, 0.99):.0f}")
    print(f"burst of {args.burst} closures: {rate:.0f} closures/s sustained end to end")
    # What this machine allows at the cost measured: every core busy with nothing but closures.
    cores = os.cpu_count() or 1
    total = sum(cost.values())
    print(f"  CPU per closure in the burst: {total:.2f} ms ("
          + ", ".join(f"{role} {ms:.2f}" for role, ms in sorted(cost.items(), key=lambda kv: -kv[1]))
          + "; benchmark = its producer and poller)")
    print(f"  bound: {cores} cores / that CPU per closure = {cores * 1000 / total:.0f} closures/s;"
          f" 1,000/s would need {cores:.0f} ms per closure or less")
    # A closure's signatures: each store signs an erase and a verify answer, which the worker
    # verifies; each store verifies both orders; the pipeline signs the two orders.
    sign, verify = signature_us()
    answers = 2 * len(stores)
    print(f"  of which signatures, at Ed25519 sign {sign:.1f} us and verify {verify:.1f} us here: {answers} answers"
          f" signed and verified, {answers} orders verified, 2 signed = "
          f"{(answers * (sign + 2 * verify) + 2 * sign) / 1000:.2f} ms")
    print("idle CPU, share of one core over " f"{args.idle_cpu_s:.0f} s: " +
          ", ".join(f"{role} {share * 100:.1f}%" for role, share in sorted(cpu.items())) +
          f"; pipeline (worker + connectors) {(cpu.get('worker', 0) + cpu.get('connectors', 0)) * 100:.1f}%")


if __name__ == "__main__":
    main()
