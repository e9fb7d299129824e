"""The restore guard (issue 16): a store restored from a backup taken before an erasure brings the
erased account back; `lifecycle erasure replay --store postgres` erases it again, keeping no erased
identifier, leaves the other accounts as they are, records the replay in the proof, and a second
replay finds nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from lifecycle.connectors.postgres.sink import ACCOUNT_TABLES, SUBJECT_TABLES
from lifecycle.embedded.postgres import postgres_bin_dir
from tests.helpers import DAY, T0, emit, event, metric, wait_for
from tests.integration.erasure.test_erasure import _complete, _life_of

GONE, GONE_VISITOR, STAYS, STAYS_VISITOR = "acc-restored-gone", "vis-restored-gone", "acc-restored-stays", "vis-stays"
COLUMNS = sorted({(t, "account_id") for t, _ in ACCOUNT_TABLES} | {(t, c) for t, c, _ in SUBJECT_TABLES})
TABLES = sorted({t for t, _ in COLUMNS})


def _held(settings, *subjects):
    """Rows per (table, column) that name any of the subjects."""
    with psycopg.connect(settings.postgres_dsn) as conn:
        return {f"{t}.{c}": conn.execute(f"SELECT count(*) FROM {t} WHERE {c} = ANY(%s)",
                                         (list(subjects),)).fetchone()[0] for t, c in COLUMNS}


def _kept(settings, *subjects):
    """What a replay must leave alone: the rows of the tables the processors do not drain on their
    own (open sessions close into session logs, pending traffic into aggregates)."""
    return {k: n for k, n in _held(settings, *subjects).items()
            if not k.startswith(("open_sessions.", "traffic_pending.", "session_"))}


def _replay(settings):
    done = subprocess.run([sys.executable, "-m", "lifecycle", "erasure", "replay", "--store", "postgres",
                           "--wait", "90"], env={**os.environ, **settings.to_env()}, capture_output=True, timeout=120)
    if done.returncode:  # say where it stopped
        with psycopg.connect(settings.postgres_dsn) as conn:
            for q in ("SELECT request_id, round, state, verify_issued_at FROM erasure_requests",
                      "SELECT store, status, verified_at, items_found FROM erasure_progress",
                      "SELECT state, replay_store, reverify_at, last_verified_at FROM erasure_proofs"):
                print(q, conn.execute(q).fetchall())  # the state the replay stopped in
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def test_a_restored_store_is_erased_again_by_a_replay(settings, worker, connectors, tmp_path):
    emit(settings, *_life_of(GONE, GONE_VISITOR), *_life_of(STAYS, STAYS_VISITOR, start=T0 + DAY))
    wait_for(lambda: _held(settings, GONE)["session_logs.account_id"] and _held(settings, STAYS)[
        "session_logs.account_id"], what="both accounts' data in the store")
    dump = tmp_path / "backup.sql"
    tables = [f"--table-and-children={t}" if t == "session_logs" else f"--table={t}" for t in TABLES]
    taken = subprocess.run([str(postgres_bin_dir() / "pg_dump"), "--data-only", *tables, "-f", str(dump),
                            "-d", settings.postgres_dsn], capture_output=True, timeout=60)
    assert taken.returncode == 0, taken.stderr.decode()

    emit(settings, event("account.closed", T0 + 2 * DAY, account=GONE))
    wait_for(lambda: _complete(worker, GONE), deadline_s=90, what="the erasure complete")
    assert not any(_held(settings, GONE, GONE_VISITOR).values())

    # The backup comes back over the store's tables.
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    restored = subprocess.run([str(postgres_bin_dir() / "psql"), "-v", "ON_ERROR_STOP=1", "-q", "-f", str(dump),
                               "-d", settings.postgres_dsn], capture_output=True, timeout=60)
    assert restored.returncode == 0, restored.stderr.decode()
    assert _held(settings, GONE)["accounts.account_id"] == 1  # the erased account is back
    stays_before = _kept(settings, STAYS, STAYS_VISITOR)

    first = _replay(settings)
    assert (first["proofs"], first["checked"], first["replayed"], first["erasing_again"]) == (1, 1, 1, 0), first
    assert not any(_held(settings, GONE, GONE_VISITOR).values())
    assert _kept(settings, STAYS, STAYS_VISITOR) == stays_before
    with psycopg.connect(settings.postgres_dsn) as conn:
        state, replays, regressions = conn.execute(
            "SELECT state, replays, regressions FROM erasure_proofs").fetchone()
        kept = [r[0] for r in conn.execute("SELECT t::text FROM erasure_replays t").fetchall()]
    assert (state, replays, regressions) == ("complete", 1, 0)
    assert not any(GONE in text for text in kept)  # the replay keeps no erased identifier
    url = worker.url("/metrics")
    assert metric(url, "lifecycle_erasure_verifications_total", store="postgres", result="replayed") >= 1
    assert metric(url, "lifecycle_erasure_proofs_regressed_total") == 0  # expected, not a regression

    second = _replay(settings)
    assert (second["proofs"], second["checked"], second["replayed"]) == (1, 1, 0), second
    with psycopg.connect(settings.postgres_dsn) as conn:
        assert conn.execute("SELECT replays FROM erasure_proofs").fetchone()[0] == 1
    assert _kept(settings, STAYS, STAYS_VISITOR) == stays_before
