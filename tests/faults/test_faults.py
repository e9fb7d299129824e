"""Fault injection under load (issue 7): a worker SIGKILLed 20 times, PostgreSQL stopped for
30 s, a store connector stopped for a minute, the whole pipeline restarted. After each: every
accepted event applied exactly once in every store that should hold it, every erasure complete
with its proof, nothing erased come back (tests/faults/load.py does the counting)."""

from __future__ import annotations

import dataclasses
import random
import threading
import time

import psycopg
import pytest

from lifecycle.embedded.postgres import EmbeddedPostgres
from lifecycle.embedded.process import free_port
from tests.faults.load import FILES, Load, assert_all_applied, assert_exactly_once, processed, size
from tests.fix_servers import ChildProcess, WorkerProcess
from tests.helpers import wait_for


def _settle(settings, load, deadline_s=180):
    for thread_error in load.errors:
        raise thread_error
    assert_all_applied(settings, load, deadline_s)

    def erasures_done():
        with psycopg.connect(settings.postgres_dsn) as conn:
            return conn.execute("SELECT count(*) FROM erasure_requests WHERE state = 'complete'").fetchone()[0] \
                == len(load.closed)

    try:
        wait_for(erasures_done, deadline_s=deadline_s, what="every erasure complete")
    except AssertionError:
        with psycopg.connect(settings.postgres_dsn) as conn:
            progress = conn.execute("SELECT store, status, count(*), max(attempts) FROM erasure_progress "
                                    "GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
        raise AssertionError(f"erasures incomplete; progress (store, status, requests, attempts): {progress}") \
            from None
    assert_exactly_once(settings, load)
    time.sleep(3)  # ticks, relays and redeliveries: nothing erased may come back
    assert_exactly_once(settings, load)


def _connectors(settings, tmp_path):
    return {name: ChildProcess(settings, tmp_path / f"connector-{name}.log", ["connector", name])
            for name in settings.erasure_stores}


@pytest.mark.timeout(600)
def test_worker_sigkilled_20_times_under_load(settings, worker, connectors):
    rng = random.Random(20)
    kills = []
    done, release = threading.Event(), threading.Event()

    def chaos():
        while len(kills) < 20:
            time.sleep(rng.uniform(0.3, 1.5))
            worker.kill()
            kills.append(time.monotonic())
            time.sleep(rng.uniform(0.0, 3.5))  # sometimes before the dead member's session expires
            worker.start(deadline_s=90)
        done.set()
        # The worker was spawned by this thread, and its death signal (PR_SET_PDEATHSIG) fires when
        # the spawning thread ends: this thread lives until the test is over.
        release.wait(600)

    load = Load(settings)
    chaos_thread = load.in_background(chaos)
    try:
        load.lives(until=lambda: len(kills) >= 14 or bool(load.errors), per_chunk=10, pause_s=0.5)
        load.closures()
        assert done.wait(300) and len(kills) == 20, load.errors
        _settle(settings, load, deadline_s=60)
    finally:
        release.set()
        chaos_thread.join(30)


@pytest.mark.timeout(600)
def test_a_worker_rebalanced_12_times_under_load_applies_everything_once(settings, worker, tmp_path):
    """The survivor's side of a kill: a second worker joins and is SIGKILLed 12 times, so the first
    loses and regains partitions with a batch fetched ahead in hand (lifecycle/core/consume.py), and
    every start applies the schema beside its running batches (it deadlocked with them before:
    streams/runtime/database.py). Every event applied once, the survivor never down."""
    second = WorkerProcess(dataclasses.replace(settings, http_port=free_port()), tmp_path / "worker-2.log")
    rng = random.Random(7)
    kills = []
    done, release = threading.Event(), threading.Event()

    def chaos():
        while len(kills) < 12:
            second.start(deadline_s=90)
            time.sleep(rng.uniform(0.5, 4))
            second.kill()
            kills.append(time.monotonic())
            time.sleep(rng.uniform(0.0, 3.5))  # sometimes back before its old member left the group
        done.set()
        release.wait(600)  # the spawning thread outlives the worker (PR_SET_PDEATHSIG)

    load = Load(settings, tag="r")
    chaos_thread = load.in_background(chaos)
    try:
        load.lives(until=lambda: len(kills) >= 12 or bool(load.errors), per_chunk=20, pause_s=0.2, most=5000)
        assert done.wait(300) and len(kills) == 12, load.errors
        assert_all_applied(settings, load, deadline_s=60)
        assert worker.alive(), "the surviving worker died"
        with psycopg.connect(settings.postgres_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM processed_events").fetchone()[0] == len(load.accepted)
            logs = conn.execute("SELECT account_id, file_count, total_bytes FROM session_logs").fetchall()
        assert sorted(logs) == sorted((load.account(i), FILES, sum(size(i, f) for f in range(FILES)))
                                      for i in load.accounts)
    finally:
        release.set()
        chaos_thread.join(30)
        second.stop()


def test_postgres_stopped_for_30_seconds_under_load(settings, tmp_path):
    pg = EmbeddedPostgres(tmp_path / "pg", tmp_path / "pg.log", fast=True)
    pg.start()
    own = dataclasses.replace(settings, postgres_dsn=pg.dsn())
    worker = WorkerProcess(own, tmp_path / "worker.log")
    stores = _connectors(own, tmp_path)
    try:
        worker.start()
        for proc in stores.values():
            proc.spawn()
        load = Load(own)
        started = time.monotonic()
        producer = load.in_background(lambda: load.lives(until=lambda: time.monotonic() - started > 45,
                                                         per_chunk=10, pause_s=0.5))
        time.sleep(8)
        pg.stop()
        time.sleep(30)
        pg.start()
        producer.join(120)
        load.closures()
        assert worker.alive(), "the worker died while PostgreSQL was down"
        _settle(own, load)
    finally:
        for proc in stores.values():
            proc.stop()
        worker.stop()
        pg.stop()


def test_a_connector_stopped_for_a_minute(settings, worker, connectors):
    load = Load(settings)
    load.lives(until=lambda: len(load.accounts) >= 100, per_chunk=20, pause_s=0.2)
    connectors["files"].stop()
    load.closures(pause_s=0.2)
    wait_for(lambda: processed(settings) >= len(load.accepted), deadline_s=60, what="closures applied")
    time.sleep(60)
    with psycopg.connect(settings.postgres_dsn) as conn:
        waiting = conn.execute("SELECT count(*) FROM erasure_progress WHERE store = 'files' AND status <> 'erased'"
                               ).fetchone()[0]
        assert waiting == len(load.closed), "erasures must wait for the stopped store"
        assert conn.execute("SELECT count(*) FROM erasure_requests WHERE state = 'open'").fetchone()[0] == \
            len(load.closed)
    connectors["files"].spawn()
    _settle(settings, load)


def test_the_whole_pipeline_restarted_under_load(settings, worker, connectors):
    load = Load(settings)
    started = time.monotonic()
    producer = load.in_background(lambda: load.lives(until=lambda: time.monotonic() - started > 25,
                                                     per_chunk=10, pause_s=0.5))
    time.sleep(8)
    for proc in connectors.values():
        proc.stop()
    worker.stop()
    time.sleep(2)
    worker.start()
    for proc in connectors.values():
        proc.spawn()
    producer.join(120)
    load.closures()
    _settle(settings, load)
