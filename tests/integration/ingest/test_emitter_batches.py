"""The emitter SDK in batches (issue 30): `emit_many` is all or nothing, fetches the keys of a whole
batch at once, from the key service too when the batch holds more subjects than one request of it
may ask for, and what it sends is applied like anything else."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from lifecycle.connectors.emitter import KEYS_PER_REQUEST, Emitter
from lifecycle.schemas.errors import ValidationFailed
from tests.helpers import T0, event, records, wait_for


def test_a_batch_with_one_bad_event_sends_nothing(settings, worker):
    good = [event("account.registered", T0, account=f"acc-bad-batch-{i}", email=f"u{i}@example.org",
                  first_name="Ada", last_name="Lovelace") for i in range(3)]
    with Emitter(settings) as emitter, pytest.raises(ValidationFailed) as refused:
        emitter.emit_many([*good, {**good[0], "event_id": "not-a-uuid"}])
    assert [e.field for e in refused.value.errors] == ["event_id"]
    assert not any(key and key.startswith(b"acc-bad-batch-") for key, _ in records(settings, "account-events"))


def test_more_subjects_than_one_key_request_are_sealed_through_the_key_service(settings, worker):
    sdk = dataclasses.replace(settings, keys_url=worker.url(""), postgres_dsn=None)
    subjects = KEYS_PER_REQUEST + 200  # each with a key of its own: two requests to the key service
    events = [event("account.registered", T0 + i, account=f"acc-many-{i:05d}", email=f"many{i}@example.org",
                    first_name="Ada", last_name="Lovelace")
              for i in range(subjects)]
    with Emitter(sdk) as emitter:
        ids = emitter.emit_many(events)
    assert ids == [e["event_id"] for e in events]
    sent = [value for key, value in records(settings, "account-events") if key and key.startswith(b"acc-many-")]
    assert len(sent) == subjects and not any(b"@example.org" in value for value in sent)  # sealed

    def applied():
        with psycopg.connect(settings.postgres_dsn) as conn:
            return conn.execute("SELECT count(*) FROM accounts WHERE account_id LIKE 'acc-many-%'").fetchone()[0]
    wait_for(lambda: applied() == subjects, deadline_s=120, what="every account of the batch applied")
