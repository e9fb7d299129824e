#!/usr/bin/env python3
"""Erasure fan-out: closures per second sustained, and time from closure to the last store's
acknowledgement (p50, p99), across the four stores, on the embedded stack.

    .venv/bin/python benchmarks/erasure_fanout.py [--accounts 500]

Baseline, measured in the same run on the same broker: one produce -> consume hop (p50). The
fan-out crosses four hops (closure -> worker, order -> store, ack -> worker, plus the outbox
relay), so its latency is printed as a multiple of that hop.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from kafka import KafkaConsumer, KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.emitter import Emitter  # noqa: E402
from lifecycle.supervisor import running_pipeline  # noqa: E402
from lifecycle_core.config import Settings  # noqa: E402
from lifecycle_core.keys import load_keyring

T0 = 1_767_225_600_000


def _event(kind: str, at: int, account: str, **fields: object) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "event_type": kind, "occurred_at": at, "account_id": account,
            "source": "bench", **fields}


def hop_p50(settings: Settings, n: int = 200) -> float:
    topic = settings.topic("dead-letters")  # any existing topic nobody else writes to here
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", type=int, default=500)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    settings = dataclasses.replace(Settings.from_env({"LIFECYCLE_STATE_DIR": str(state)}), clock="event")
    with running_pipeline(settings, lambda line: print(line, file=sys.stderr)) as (live, _):
        accounts = [f"acc-b{i:05d}" for i in range(args.accounts)]
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
        time.sleep(3)
        baseline = hop_p50(live)
        closed_at: dict[str, float] = {}
        start = time.time()
        with Emitter(live) as emitter:
            for acc in accounts:
                emitter.emit(_event("account.closed", T0 + 60_000, acc))
                closed_at[acc] = time.time()
        deadline = time.time() + 600
        with psycopg.connect(live.postgres_dsn or "", autocommit=True) as conn:
            while time.time() < deadline:
                done = conn.execute("SELECT count(*) FROM erasure_requests WHERE state = 'complete'").fetchone()[0]
                if done >= len(accounts):
                    break
                time.sleep(0.2)
            elapsed = time.time() - start
            keys = load_keyring(live, create=False)
            rows = conn.execute(
                "SELECT r.account_hash, max(p.acknowledged_at) FROM erasure_requests r "
                "JOIN erasure_progress p USING (request_id) GROUP BY 1").fetchall()
            stores = [r[0] for r in conn.execute("SELECT store FROM erasure_stores WHERE active ORDER BY 1")]
    by_hash = {keys.pseudonym(a): a for a in accounts}
    latencies = sorted(last.timestamp() - closed_at[by_hash[h]] for h, last in rows if h in by_hash and last)
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"stores: {', '.join(stores)}")
    print(f"closures: {len(accounts)} completed in {elapsed:.2f} s = {len(accounts) / elapsed:.0f} closures/s")
    print(f"closure -> last ack: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(f"baseline one broker hop p50: {baseline * 1000:.1f} ms; fan-out p50 = {p50 / baseline:.1f}x a hop")


if __name__ == "__main__":
    main()
