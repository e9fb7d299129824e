"""The record of processing (issue 16, GDPR Art. 30): complete against what the code holds; a
table, topic or store holding a category the record does not describe is a failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from lifecycle.connectors.mailing_list.sink import MailingListSink
from lifecycle.connectors.stores import STORES
from lifecycle.core.datakeys import DDL as DATA_KEYS_DDL
from lifecycle.core.keys import HASH_KEYS_DDL
from lifecycle.core.policy import load_policy
from lifecycle.core.storekeys import DDL as STORE_KEYS_DDL
from lifecycle.records import build_record, load_processing, problems, table_names
from lifecycle.streams.runtime.database import apply_schema

ARTICLE_30 = ("controller", "data_subjects", "activities", "recipients", "transfers_to_third_countries",
              "security_measures")


def _every_table(settings):
    """The database as a running pipeline leaves it: the schema, the key tables, the mailing list's."""
    apply_schema(settings.postgres_dsn)
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        for ddl in (DATA_KEYS_DDL, HASH_KEYS_DDL, STORE_KEYS_DDL):
            conn.execute(ddl)
    sink = MailingListSink(settings.postgres_dsn)
    with sink.db.transaction():
        pass
    sink.close()
    with psycopg.connect(settings.postgres_dsn) as conn:
        return table_names(conn)


def test_the_record_lists_every_category_that_a_table_topic_or_store_holds(settings):
    processing = load_processing()
    stores = {name: cls.holds for name, cls in STORES.items()}
    record = build_record(settings, stores, processing)
    tables = _every_table(settings)
    assert "mailing.list_members" in tables and "data_keys" in tables and "session_logs" in tables
    assert problems(record, processing, tables) == []

    policy = load_policy(settings.retention_policy)
    assert [a["category"] for a in record["activities"]] == list(policy.categories)
    for activity in record["activities"]:
        assert activity["purpose"] and activity["legal_basis"] and activity["time_limit"], activity
    assert all(cls.holds for cls in STORES.values())  # every shipped store says what it keeps
    by_category = {a["category"]: a for a in record["activities"]}
    assert by_category["account_profile"]["fields"] and "accounts" in by_category["account_profile"]["topics"]
    assert "files" in by_category["billing_records"]["recipients"]

    # What the test guards against: a new table, or a store keeping a category nobody described.
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE shadow_copy (account_id text)")
        tables = table_names(conn)
    found = problems(build_record(settings, {**stores, "crm": ("phone_numbers",)}, processing), processing, tables)
    assert found == ["table shadow_copy: in the database, in no list of deploy/processing.yaml",
                     "store crm keeps phone_numbers, which deploy/retention.yaml does not have"]


def test_lifecycle_records_writes_markdown_and_json(settings, tmp_path):
    done = subprocess.run([sys.executable, "-m", "lifecycle", "records", "--out", str(tmp_path)],
                          env={**os.environ, **settings.to_env()}, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert b"record of processing:" not in done.stderr  # no problem reported
    record = json.loads((tmp_path / "record-of-processing.json").read_text())
    assert all(key in record for key in ARTICLE_30)
    text = (tmp_path / "record-of-processing.md").read_text()
    assert "### session_logs" in text and "12 months from event time" in text
    assert "the date and size of every file sent in a session" in text
