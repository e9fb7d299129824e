#!/usr/bin/env python3
"""The performance ceiling, in one run on one embedded broker (issue 7):

    .venv/bin/python benchmarks/ceiling.py [--events 60000]

(a) raw aiokafka consume + produce of our session events: the ceiling;
(b) a plain Faust agent that decodes each event, updates a table and forwards it: the naive
    baseline (one event at a time, as Faust is usually written);
(c) our end to end: `lifecycle worker` (one process; `--workers N` for N) applying session events into PostgreSQL
    session logs, measured from its first applied event to its last, per worker core (its own
    CPU seconds from /proc); the events sealed as the SDK writes them (crypto-shredding on), and
    with sealing off (the same events in clear, `LIFECYCLE_ENCRYPT_PERSONAL_DATA=false`),
    alternating for `--rounds` rounds, each run on a database and topics of its own; (c) is the
    best round with sealing on;
(d) the ratios c/b, c/a, and c on / c off;
(e) the Avro codec: the reference `avro` package against fastavro (ours), encode and decode.
(f) what bounds c/a on this machine: the CPU one event costs in (c), in the worker, PostgreSQL and
    the broker (benchmarks/cpu.py), and the rate every core of the machine could reach at that cost.
The same events (a mix of session starts, file transfers and ends, ~200 bytes framed) feed (a),
(b) and (c). Erasure and retention figures: benchmarks/erasure_fanout.py, retention_sweep.py.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu import CpuMeter  # noqa: E402
from stack import bench_stack, start_worker  # noqa: E402

from lifecycle.connectors.emitter import Emitter  # noqa: E402
from lifecycle.core.config import Settings  # noqa: E402
from lifecycle.embedded.process import free_port  # noqa: E402
from lifecycle.schemas import Codec  # noqa: E402
from lifecycle.streams.runtime.database import apply_schema  # noqa: E402
from lifecycle.topics import apply_topics, load_spec  # noqa: E402

T0 = 1_767_225_600_000
FILES_PER_SESSION = 8


def session_events(n: int, tag: str) -> list[dict]:
    out = []
    sessions = n // (FILES_PER_SESSION + 2)
    for s in range(sessions):
        acc, sid, at = f"acc-{tag}{s % 5000}", f"s-{tag}{s}", T0 + s
        out.append({"event_id": str(uuid.uuid4()), "event_type": "session.started", "occurred_at": at,
                    "account_id": acc, "source": "bench", "session_id": sid, "ip": "198.51.100.1",
                    "domain": "app.example.test", "user_agent": "bench/1.0", "browser": "firefox", "os": "linux",
                    "login_method": "password"})
        for f in range(FILES_PER_SESSION):
            out.append({"event_id": str(uuid.uuid4()), "event_type": "session.file_transferred",
                        "occurred_at": at + 1 + f, "account_id": acc, "source": "bench", "session_id": sid,
                        "mime_type": "application/pdf", "size_bytes": 1000 + f})
        out.append({"event_id": str(uuid.uuid4()), "event_type": "session.ended", "occurred_at": at + 60_000,
                    "account_id": acc, "source": "bench", "session_id": sid, "reason": "logout"})
    return out


def load_topic(settings: Settings, topic: str, events: list[dict], *, seal: bool = False) -> None:
    """Produce the events; sealed as the SDK seals them when ``seal``."""
    with Emitter(settings, encrypt=seal) as emitter:
        catalog = emitter.codec.catalog
        for start in range(0, len(events), 2000):  # the keys of 2,000 events in one statement
            chunk = [(catalog.by_event_type(e["event_type"]), e) for e in events[start:start + 2000]]
            values = emitter.sealed_many(chunk, [e["account_id"] for _, e in chunk])
            for (record, e), value in zip(chunk, values, strict=True):
                emitter.send_raw(topic, e["account_id"].encode(), emitter.codec.encode(record, value))
        emitter.flush(timeout_s=300)


def twin(settings: Settings, name: str, *, encrypt: bool) -> Settings:
    """The same stack with a database and a topic prefix of its own, sealing on or off."""
    with psycopg.connect(settings.postgres_dsn or "", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    other = dataclasses.replace(settings, topic_prefix=f"{name}.", encrypt_personal_data=encrypt,
                                postgres_dsn=psycopg.conninfo.make_conninfo(settings.postgres_dsn or "", dbname=name))
    apply_topics(other, load_spec(other.topic_spec))
    apply_schema(other.postgres_dsn or "")
    return other


async def raw_ceiling(settings: Settings, src: str, dst: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(src, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50,
                                max_partition_fetch_bytes=4 << 20)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 << 10)
    await consumer.start()
    await producer.start()
    try:
        done, start = 0, None
        while done < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                if start is None:
                    start = time.perf_counter()
                for r in records:
                    await producer.send(dst, key=r.key, value=r.value)
                done += len(records)
        await producer.flush()
        return n / (time.perf_counter() - (start or time.perf_counter()))
    finally:
        await consumer.stop()
        await producer.stop()


NAIVE = '''
import sys, time, faust
sys.path.insert(0, {root!r})
from lifecycle.schemas import Codec
bootstrap, src, dst, n, app_id = {bootstrap!r}, {src!r}, {dst!r}, {n}, {app_id!r}
codec = Codec()
app = faust.App(app_id, broker="kafka://" + bootstrap, store="memory://", topic_partitions=4, web_enabled=False,
                consumer_auto_offset_reset="earliest", broker_session_timeout=6, broker_heartbeat_interval=1,
                topic_disable_leader=True, producer_acks=-1)
source = app.topic(src, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
sink = app.topic(dst, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
counts = app.Table("naive-counts", default=int, partitions=4)
state = {{"done": 0, "start": None}}

@app.agent(source)
async def naive(stream):
    async for event in stream.events():
        if state["start"] is None:
            state["start"] = time.perf_counter()
        value = codec.decode(event.value).value
        counts[value["session_id"]] += 1
        await sink.send(key=event.key, value=event.value)
        state["done"] += 1
        if state["done"] == n:
            print(f"RATE={{n / (time.perf_counter() - state['start'])}}", flush=True)

app.main()
'''


def naive_baseline(settings: Settings, src: str, dst: str, n: int, work: Path) -> float:
    script = work / "naive_app.py"
    script.write_text(NAIVE.format(root=str(Path(__file__).resolve().parent.parent), bootstrap=settings.kafka_bootstrap,
                                   src=src, dst=dst, n=n, app_id=f"bench-naive-{uuid.uuid4().hex[:6]}"))
    proc = subprocess.Popen([sys.executable, str(script), "worker", "-l", "warn", "--without-web"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 900
        tail: list[str] = []
        for line in proc.stdout:
            tail = (tail + [line])[-20:]
            if "RATE=" in line:  # Faust sends print() through its logger
                return float(line.split("RATE=", 1)[1].split()[0])
            if time.monotonic() > deadline:
                break
        raise SystemExit("the naive Faust app did not finish:\n" + "".join(tail))
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


class Ours(NamedTuple):
    wall: float  # events/s
    per_core: float  # events per worker CPU second
    share: float  # the worker's share of one core
    cost_us: dict[str, float]  # CPU microseconds per event, by role (worker, postgresql, broker)


def our_rate(settings: Settings, n: int, work: Path, workers: int = 1) -> Ours:
    procs = [start_worker(dataclasses.replace(settings, http_port=free_port()) if i else settings, work)
             for i in range(workers)]
    try:
        with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            def processed() -> int:
                return conn.execute("SELECT count(*) FROM processed_events").fetchone()[0]

            deadline = time.monotonic() + 900
            while processed() == 0:
                if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
                    raise SystemExit("the worker did not start applying events; see worker.log")
                time.sleep(0.05)
            start, meter = time.perf_counter(), CpuMeter()
            while (done := processed()) < n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the worker applied {done} of {n}")
                time.sleep(0.05)
            elapsed, used = time.perf_counter() - start, meter.used()
            logs = conn.execute("SELECT count(*), sum(file_count) FROM session_logs").fetchone()
            assert logs[0] == n // (FILES_PER_SESSION + 2) and logs[1] == logs[0] * FILES_PER_SESSION, logs
            # The benchmark's own polling is not the pipeline's cost.
            cost = {name: seconds / n * 1e6 for name, seconds in used.items() if name != "benchmark"}
            return Ours(n / elapsed, n / used["worker"], used["worker"] / elapsed, cost)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def _costs(cost_us: dict[str, float]) -> str:
    return ", ".join(f"{name} {us:.1f}" for name, us in sorted(cost_us.items(), key=lambda kv: -kv[1]) if us >= 0.05)


def codec_rates(events: list[dict]) -> dict[str, float]:
    import avro.io
    import avro.schema

    codec = Codec()
    sample = [e for e in events if e["event_type"] == "session.file_transferred"][:20000]
    record = codec.catalog.by_event_type("session.file_transferred")
    schema = avro.schema.parse(json.dumps(record.schema))
    writer, reader = avro.io.DatumWriter(schema), avro.io.DatumReader(schema)
    out: dict[str, float] = {}
    from lifecycle.core.timeutil import ms_to_dt

    avro_sample = [{**e, "occurred_at": ms_to_dt(e["occurred_at"])} for e in sample]  # it wants datetimes
    start = time.perf_counter()
    bodies = []
    for e in avro_sample:
        buf = io.BytesIO()
        writer.write(e, avro.io.BinaryEncoder(buf))
        bodies.append(buf.getvalue())
    out["avro encode"] = len(sample) / (time.perf_counter() - start)
    start = time.perf_counter()
    for b in bodies:
        reader.read(avro.io.BinaryDecoder(io.BytesIO(b)))
    out["avro decode"] = len(sample) / (time.perf_counter() - start)
    start = time.perf_counter()
    framed = [codec.encode(record, e) for e in sample]
    out["fastavro encode (ours)"] = len(sample) / (time.perf_counter() - start)
    start = time.perf_counter()
    for f in framed:
        codec.decode(f)
    out["fastavro decode (ours)"] = len(sample) / (time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--only-ours", action="store_true", help="(c) alone, for profiling; no ratios")
    p.add_argument("--rounds", type=int, default=2, help="rounds of (c) with sealing off, then on")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes in (c), over the input topic's partitions (CPU figures: all of them)")
    args = p.parse_args()
    with bench_stack("ceiling") as (settings, work):
        events = session_events(args.events, "c")
        n = len(events)
        print(f"{n} session events, {FILES_PER_SESSION} file transfers per session", file=sys.stderr)
        t = time.perf_counter()
        load_topic(settings, settings.topic("session-events"), events, seal=True)
        # Sealing on and off, alternating, each on its own database and topics: this machine's
        # figures drift by tens of percent between minutes, so each side keeps its best round.
        rounds = [] if args.only_ours else [(twin(settings, f"ceiling_{side}_{r}", encrypt=side == "on"), side)
                                             for r in range(args.rounds) for side in ("off", "on")]
        for other, side in rounds:
            load_topic(other, other.topic("session-events"), events, seal=side == "on")
        print(f"loaded in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        if args.only_ours:
            ours = our_rate(settings, n, work, args.workers)
            print(f"(c) ours: {ours.wall:.0f}/s wall, {ours.per_core:.0f} per worker CPU second"
                  f" (worker CPU {ours.share:.0%}); CPU per event: {_costs(ours.cost_us)}")
            return
        sides: dict[str, list[Ours]] = {"on": [], "off": []}
        for other, side in rounds:
            sides[side].append(our_rate(other, n, work, args.workers))
            print(f"(c) ours, sealing {side}: {sides[side][-1].wall:.0f}/s", file=sys.stderr)
        best = {side: max(runs, key=lambda r: r.wall) for side, runs in sides.items()}
        off_wall, off_core, off_share, _ = best["off"]
        raw = asyncio.run(raw_ceiling(settings, settings.topic("session-events"), "ceiling.raw-out", n))
        print(f"(a) raw: {raw:.0f}/s", file=sys.stderr)
        naive = naive_baseline(settings, settings.topic("session-events"), "ceiling.naive-out", n, work)
        print(f"(b) naive Faust: {naive:.0f}/s", file=sys.stderr)
        wall, per_core, share, cost = best["on"]
        codecs = codec_rates(events)
    print(f"events: {n} session events (starts, {FILES_PER_SESSION} file transfers, ends); one embedded broker")
    print(f"{'figure':52} {'events/s':>10}")
    print(f"{'(a) raw aiokafka consume + produce (ceiling)':52} {raw:10.0f}")
    print(f"{'(b) naive Faust agent: decode, table, forward':52} {naive:10.0f}")
    print(f"{'(c) ours end to end into PostgreSQL, wall':52} {wall:10.0f}")
    print(f"{'(c) ours per worker core (per worker CPU second)':52} {per_core:10.0f}   (worker CPU {share:.0%})")
    for side in ("on", "off"):
        print(f"{'(c) rounds, sealing ' + side + ', wall':52} " + " ".join(f"{r[0]:.0f}" for r in sides[side]))
    print(f"{'(c) ours with sealing off, wall':52} {off_wall:10.0f}")
    print(f"{'(c) ours with sealing off, per worker core':52} {off_core:10.0f}   (worker CPU {off_share:.0%})")
    print(f"{'(d) c on / c off (wall): what sealing costs':52} {wall / off_wall:10.2f}")
    print(f"{'(d) c on / c off (per worker core)':52} {per_core / off_core:10.2f}")
    print(f"{'(d) c/b (wall)':52} {wall / naive:10.2f}")
    print(f"{'(d) c/a (wall)':52} {wall / raw:10.3f}")
    # What this machine allows at the cost measured: every core busy with nothing but this work.
    cores = os.cpu_count() or 1
    bound = cores * 1e6 / sum(cost.values())
    print(f"{'(f) CPU per event in (c), microseconds':52} {sum(cost.values()):10.1f}   ({_costs(cost)})")
    print(f"{f'(f) bound: {cores} cores / that CPU per event':52} {bound:10.0f}")
    print(f"{'(f) bound / a: c/a cannot pass it on this machine':52} {bound / raw:10.3f}")
    print(f"{'(f) CPU per event that c/a = 0.5 would need, us':52} {cores * 1e6 / (0.5 * raw):10.1f}")
    for name, rate in codecs.items():
        print(f"{'(e) ' + name:52} {rate:10.0f}")
    print(f"{'(e) fastavro / avro, decode':52} {codecs['fastavro decode (ours)'] / codecs['avro decode']:10.1f}")


if __name__ == "__main__":
    main()
