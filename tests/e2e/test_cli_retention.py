"""`lifecycle retention plan` and the policy check at start, as a user runs them."""

from __future__ import annotations

import datetime as dt
import subprocess

import psycopg

from lifecycle.core.config import PROJECT_ROOT
from lifecycle.streams.runtime.database import apply_schema
from tests.e2e.test_cli import _env, _lifecycle


def test_retention_plan_counts_without_erasing(settings, tmp_path):
    apply_schema(settings.postgres_dsn)
    old = dt.datetime(2025, 1, 10, tzinfo=dt.UTC)
    with psycopg.connect(settings.postgres_dsn) as conn:
        for account in ("acc-p1", "acc-p2", "acc-hold"):
            conn.execute("INSERT INTO failed_logins (event_id, account_id, occurred_at) "
                         "VALUES (gen_random_uuid(), %s, %s)", (account, old))
            conn.execute("INSERT INTO failed_logins (event_id, account_id, occurred_at) "
                         "VALUES (gen_random_uuid(), %s, now())", (account,))
        conn.execute("INSERT INTO legal_holds VALUES ('acc-hold', now())")
    env = _env(tmp_path / "state", LIFECYCLE_POSTGRES_DSN=settings.postgres_dsn,
               LIFECYCLE_FILES_ROOT=str(settings.files_dir), LIFECYCLE_ERASURE_STORES="postgres,files")
    done = subprocess.run(_lifecycle("retention", "plan", "--at", "2026-06-01T00:00:00Z"), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = lines.index(next(ln for ln in lines if ln.startswith("security_information:")))
    assert "cutoff 2025-06-01T00:00:00+00:00" in lines[at]
    assert lines[at + 1] == "  postgres: 2 item(s) would be erased (1 account(s) on legal hold kept)"
    assert any(ln.startswith("account_profile:") and "with the account's erasure" in ln for ln in lines)
    assert any("kafka " in ln and "dead-letters" in ln for ln in lines)
    with psycopg.connect(settings.postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM failed_logins").fetchone()[0] == 6  # nothing erased


def test_an_invalid_policy_stops_the_worker_naming_the_line(tmp_path):
    bad = tmp_path / "retention.yaml"
    text = (PROJECT_ROOT / "deploy" / "retention.yaml").read_text()
    bad.write_text(text.replace("    window: 13 months\n", "    window: -13 months\n", 1))
    line = next(i for i, ln in enumerate(bad.read_text().splitlines(), 1) if "-13 months" in ln)
    env = _env(tmp_path / "state", LIFECYCLE_RETENTION_POLICY=str(bad), LIFECYCLE_KAFKA_BOOTSTRAP="127.0.0.1:9",
               LIFECYCLE_POSTGRES_DSN="postgresql://nobody@127.0.0.1:9/none")
    done = subprocess.run(_lifecycle("worker"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{bad}:{line}: category consent_history: window '-13 months' is negative" in done.stderr
