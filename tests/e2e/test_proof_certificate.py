"""A certificate of erasure an auditor checks offline (issue 18): `lifecycle proof export` signs
the proof of a completed erasure with Ed25519, `lifecycle proof verify` accepts it with nothing of
the pipeline, and refuses it with any byte changed or signed by another key."""

from __future__ import annotations

import dataclasses
import json

import psycopg

from lifecycle import proofs
from tests.helpers import HOUR, T0, emit, erasure_answer, event, lifecycle_cli, wait_for
from tests.unit.samples import PII

_lifecycle = lifecycle_cli


def test_a_certificate_verifies_offline_and_no_changed_byte_does(settings, worker, connectors, tmp_path):
    acc = "acc-certified"
    emit(settings, event("account.registered", T0, account=acc, email=PII["email"], first_name="C", last_name="D"),
         event("account.closed", T0 + HOUR, account=acc))
    wait_for(lambda: (a := erasure_answer(worker, acc)) and a["erasures"][0]["state"] == "complete",
             deadline_s=90, what="the erasure")
    with psycopg.connect(settings.postgres_dsn) as conn:
        [request_id] = [str(r[0]) for r in conn.execute("SELECT request_id FROM erasure_proofs").fetchall()]

    cert = tmp_path / "certificate.json"
    exported = _lifecycle(settings, "proof", "export", request_id, "--out", str(cert))
    assert exported.returncode == 0, exported.stderr.decode()
    data = cert.read_bytes()
    assert acc.encode() not in data and PII["email"].encode() not in data
    body = json.loads(data)["certificate"]
    assert body["request_id"] == request_id and body["keys_destroyed_at"] and body["items_erased"] >= 1
    assert {s["store"] for s in body["stores"]} == set(settings.erasure_stores)

    key = tmp_path / "published.key"
    published = _lifecycle(settings, "proof", "key", "--raw")
    assert published.returncode == 0
    key.write_bytes(published.stdout)
    stores = tmp_path / "stores.json"  # the stores' published keys (issue 26: a v2 certificate's receipts)
    listed = _lifecycle(settings, "store", "keys")
    assert listed.returncode == 0, listed.stderr.decode()
    stores.write_bytes(listed.stdout)
    offline = dataclasses.replace(settings, postgres_dsn=None, kafka_bootstrap=None, state_dir=tmp_path / "auditor")
    ok = _lifecycle(offline, "proof", "verify", str(cert), "--public-key", str(key), "--store-keys", str(stores))
    assert ok.returncode == 0 and b"valid" in ok.stdout, ok.stderr.decode()

    for i in range(len(data)):  # every byte changed in turn: each a refusal
        changed = bytearray(data)
        changed[i] = (changed[i] + 1) % 256
        try:
            proofs.verify(bytes(changed), published.stdout.decode().strip())
        except proofs.ProofRefused:
            continue
        raise AssertionError(f"a change at byte {i} was accepted")
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(data.replace(b'"reason":"', b'"reason":"x', 1))
    refused = _lifecycle(offline, "proof", "verify", str(tampered))
    assert refused.returncode == 1 and b"REFUSED" in refused.stderr

    other = tmp_path / "other.key"
    other.write_text(proofs.public_key_text(proofs.Ed25519PrivateKey.generate())["public_key"])
    assert _lifecycle(offline, "proof", "verify", str(cert), "--public-key", str(other)).returncode == 1


def test_a_certificate_states_when_the_backups_expire_and_the_replays(settings, worker, connectors, tmp_path):
    """Issue 29: each store's declared backup retention; the date by which every backup that may
    hold the subject expires (none while a store has declared nothing); `proof verify` shows it
    and the restore guard's replays."""
    acc = "acc-backups"
    emit(settings, event("account.registered", T0, account=acc, email=PII["email"], first_name="B", last_name="K"),
         event("account.closed", T0 + HOUR, account=acc))
    wait_for(lambda: (a := erasure_answer(worker, acc)) and a["erasures"][0]["state"] == "complete",
             deadline_s=90, what="the erasure")
    rid = erasure_answer(worker, acc)["erasures"][0]["request_id"]
    first, *rest = sorted(settings.erasure_stores)
    for days, store in enumerate(rest, start=30):
        assert _lifecycle(settings, "store", "backups", store, "--days", str(days)).returncode == 0
    assert _lifecycle(settings, "store", "backups", "nobody", "--days", "3").returncode != 0
    cert = tmp_path / "certificate.json"
    assert _lifecycle(settings, "proof", "export", rid, "--out", str(cert)).returncode == 0
    body = json.loads(cert.read_bytes())["certificate"]
    assert (body["backups_expire_by"], body["backups_undeclared"]) == (None, [first])

    assert _lifecycle(settings, "store", "backups", first, "--days", "90").returncode == 0
    assert _lifecycle(settings, "proof", "export", rid, "--out", str(cert)).returncode == 0
    body = json.loads(cert.read_bytes())["certificate"]
    by_store = {s["store"]: s["backups"] for s in body["stores"]}
    assert by_store[first]["retention_days"] == 90 and body["backups_undeclared"] == []
    assert body["backups_expire_by"] == max(b["expire_by"] for b in by_store.values()) == by_store[first]["expire_by"]

    key, stores = tmp_path / "proof.pub", tmp_path / "stores.json"
    key.write_bytes(_lifecycle(settings, "proof", "key", "--raw").stdout)
    stores.write_bytes(_lifecycle(settings, "store", "keys").stdout)
    offline = dataclasses.replace(settings, postgres_dsn=None, kafka_bootstrap=None, state_dir=tmp_path / "auditor")
    checked = _lifecycle(offline, "proof", "verify", str(cert), "--public-key", str(key), "--store-keys", str(stores))
    assert checked.returncode == 0, checked.stderr.decode()
    out = checked.stdout.decode()
    assert f"every backup that may hold the subject expires by {body['backups_expire_by']}" in out
    assert "replays on restored stores: 0" in out
