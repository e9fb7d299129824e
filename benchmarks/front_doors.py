#!/usr/bin/env python3
"""The front doors against the intake behind them, in one run on one embedded stack (issue 30):

    .venv/bin/python benchmarks/front_doors.py [--events 60000] [--clients 2] [--demo-accounts 20000]

(i)   the emitter SDK: session events validated, sealed and produced with `Emitter.emit_many`
      (batches of 2,000, one key request each), until the broker acknowledged the last; no worker
      runs meanwhile, so the SDK has the machine to itself;
(ii)  the intake (the baseline): a `lifecycle worker` started on that backlog, from its first
      applied event to its last, into PostgreSQL session logs;
(iii) `POST /v1/events` to the same worker, batches of 1,000 from ``--clients`` clients at once:
      the rate of 202 answers (validated, sealed, journaled, sent), and the rate the worker applied
      them at (the intake running beside the HTTP service in the same process, as it does);
(v)   `POST /v1/events` to a `lifecycle front` (streams/http/front.py), the route in a process of its
      own beside the same worker: the same batches and clients, the rate of 202s and of applied;
(iv)  `lifecycle demo --accounts N` on a fresh embedded stack of its own: its wall time, and its
      valid events over that time.
Each is printed beside the intake's rate from the same run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import FILES_PER_SESSION, session_events  # noqa: E402
from stack import bench_stack, start_worker  # noqa: E402

from lifecycle.connectors.emitter import Emitter  # noqa: E402
from lifecycle.core.config import Settings  # noqa: E402
from lifecycle.embedded.process import free_port  # noqa: E402

TOKEN = "bench-ingest-" + uuid.uuid4().hex
SDK_BATCH = 2000
HTTP_BATCH = 1000


def sdk_rate(settings: Settings, events: list[dict]) -> float:
    start = time.perf_counter()
    with Emitter(settings) as emitter:
        for i in range(0, len(events), SDK_BATCH):
            emitter.emit_many(events[i:i + SDK_BATCH])
        emitter.flush(timeout_s=300)
    return len(events) / (time.perf_counter() - start)


def _applied(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM processed_events").fetchone()[0]


def _wait_applied(conn: psycopg.Connection, n: int, worker: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 900
    while (done := _applied(conn)) < n:
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit(f"{what}: the worker applied {done} of {n}; see worker.log")
        time.sleep(0.02)


def intake_rate(conn: psycopg.Connection, n: int, worker: subprocess.Popen) -> float:
    _wait_applied(conn, 1, worker, "intake")
    start = time.perf_counter()
    _wait_applied(conn, n, worker, "intake")
    return n / (time.perf_counter() - start)


def _post_all(port: int, batches: list[bytes]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for body in batches:
            conn.request("POST", "/v1/events", body=body, headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            answer = conn.getresponse()
            text = answer.read()
            if answer.status != 202:
                raise SystemExit(f"POST /v1/events answered {answer.status}: {text[:300]!r}")
    finally:
        conn.close()


def http_rates(port: int, conn: psycopg.Connection, events: list[dict], clients: int,
               worker: subprocess.Popen, before: int) -> tuple[float, float]:
    """(202 answers per second, events applied per second) for ``events`` posted by ``clients``."""
    bodies = [json.dumps(events[i:i + HTTP_BATCH]).encode() for i in range(0, len(events), HTTP_BATCH)]
    shares = [bodies[c::clients] for c in range(clients)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(_post_all, port, share) for share in shares]:
            done.result()
    answered = time.perf_counter() - start
    _wait_applied(conn, before + len(events), worker, "HTTP")
    return len(events) / answered, len(events) / (time.perf_counter() - start)


def start_front(settings: Settings, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A `lifecycle front` on its own port, once it answers /healthz."""
    port = free_port()
    env = {**os.environ, **settings.to_env(), "LIFECYCLE_LOG_LEVEL": "warning"}
    with open(work / "front.log", "ab") as log:
        front = subprocess.Popen([sys.executable, "-m", "lifecycle", "front", "--port", str(port)], env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return front, port
        except OSError:
            pass
        if time.monotonic() > deadline or front.poll() is not None:
            front.kill()
            raise SystemExit(f"the front did not start; see {work / 'front.log'}")
        time.sleep(0.1)


def demo_time(accounts: int, work: Path) -> tuple[float, int]:
    """(wall seconds, valid events) of `lifecycle demo` on a fresh embedded stack of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(LIFECYCLE_STATE_DIR=str(work / "demo-state"), LIFECYCLE_HTTP_PORT=str(free_port()))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lifecycle", "demo", "--accounts", str(accounts)], env=env,
                         capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    (work / "demo.log").write_text(out.stdout + out.stderr)
    found = re.search(r"accepted (\d+) of \d+ valid events.*: OK", out.stdout)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"the demo failed; see {work / 'demo.log'}")
    return wall, int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--demo-accounts", type=int, default=20_000, help="0: no demo")
    args = p.parse_args()
    with bench_stack("doors", http_token=TOKEN) as (settings, work):
        backlog, posted = session_events(args.events, "s"), session_events(args.events, "h")
        fronted = session_events(args.events, "f")
        n = len(backlog)
        print(f"{n} session events each way, {FILES_PER_SESSION} file transfers per session", file=sys.stderr)
        sdk = sdk_rate(settings, backlog)
        print(f"(i) SDK: {sdk:.0f}/s", file=sys.stderr)
        worker = start_worker(settings, work)
        try:
            with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
                intake = intake_rate(conn, n, worker)
                print(f"(ii) intake: {intake:.0f}/s", file=sys.stderr)
                answered, applied = http_rates(settings.http_port, conn, posted, args.clients, worker, n)
                print(f"(iii) HTTP: {answered:.0f}/s answered, {applied:.0f}/s applied", file=sys.stderr)
                front, port = start_front(settings, work)
                try:
                    f_answered, f_applied = http_rates(port, conn, fronted, args.clients, worker, 2 * n)
                finally:
                    front.terminate()
                    front.wait(30)
                print(f"(v) front: {f_answered:.0f}/s answered, {f_applied:.0f}/s applied", file=sys.stderr)
        finally:
            worker.terminate()
            worker.wait(30)
    demo = demo_time(args.demo_accounts, work) if args.demo_accounts else None
    print(f"events: {n} session events each way (starts, {FILES_PER_SESSION} file transfers, ends), sealed; "
          "one embedded broker, this machine")
    print(f"{'figure':58} {'events/s':>10} {'/ intake':>9}")
    print(f"{'(ii) intake: a worker on a backlog, into PostgreSQL (baseline)':58} {intake:10.0f} {1:9.2f}")
    print(f"{'(i) emitter SDK, emit_many of 2,000, until acknowledged':58} {sdk:10.0f} {sdk / intake:9.2f}")
    print(f"{f'(iii) POST /v1/events, {args.clients} clients x batches of 1,000: 202s':58} "
          f"{answered:10.0f} {answered / intake:9.2f}")
    print(f"{'(iii) the same events applied (intake beside HTTP)':58} {applied:10.0f} {applied / intake:9.2f}")
    print(f"{'(v) the same to a lifecycle front beside the worker: 202s':58} "
          f"{f_answered:10.0f} {f_answered / intake:9.2f}")
    print(f"{'(v) the same events applied':58} {f_applied:10.0f} {f_applied / intake:9.2f}")
    if demo is not None:
        wall, valid = demo
        print(f"{f'(iv) lifecycle demo --accounts {args.demo_accounts}: {valid} events in {wall:.1f} s':58} "
              f"{valid / wall:10.0f} {valid / wall / intake:9.2f}")


if __name__ == "__main__":
    main()
