"""Build 4 of issue 26: a certificate of erasure that holds against the pipeline itself. Version 2
carries, for every store, the store's own signed receipts of its erase and verify answers (no
account id in them) and its key's fingerprint; `proof verify` checks the pipeline's signature and
each store's, offline, with the published keys alone. A certificate whose store receipt was altered
(and the whole re-signed by the pipeline, as a dishonest pipeline would), or whose receipt is
signed with the pipeline's key instead of the store's, is refused; a v1 certificate verifies as v1."""

from __future__ import annotations

import base64
import dataclasses
import json

import psycopg

from lifecycle import proofs
from tests.helpers import HOUR, T0, emit, erasure_answer, event, lifecycle_cli, wait_for
from tests.unit.samples import PII

_lifecycle = lifecycle_cli


def test_store_receipts_in_the_certificate_are_checked_offline(settings, worker, connectors, tmp_path):
    acc = "acc-certified-v2"
    emit(settings, event("account.registered", T0, account=acc, email=PII["email"], first_name="C", last_name="V"),
         event("account.closed", T0 + HOUR, account=acc))
    wait_for(lambda: (a := erasure_answer(worker, acc)) and a["erasures"][0]["state"] == "complete",
             deadline_s=90, what="the erasure")
    with psycopg.connect(settings.postgres_dsn) as conn:
        [request_id] = [str(r[0]) for r in conn.execute("SELECT request_id FROM erasure_proofs").fetchall()]
    cert = tmp_path / "certificate.json"
    assert _lifecycle(settings, "proof", "export", request_id, "--out", str(cert)).returncode == 0
    pipeline_key, stores = tmp_path / "pipeline.pub", tmp_path / "stores.json"
    pipeline_key.write_bytes(_lifecycle(settings, "proof", "key", "--raw").stdout)
    stores.write_bytes(_lifecycle(settings, "store", "keys").stdout)
    data = cert.read_bytes()
    assert acc.encode() not in data and PII["email"].encode() not in data
    body = json.loads(data)["certificate"]
    assert body["format"] == proofs.FORMAT and {s["store"] for s in body["stores"]} == set(settings.erasure_stores)
    assert all(s["ack_receipt"] and s["verify_receipt"] and len(s["store_key"]) == 16 for s in body["stores"])

    auditor = dataclasses.replace(settings, postgres_dsn=None, kafka_bootstrap=None, state_dir=tmp_path / "auditor")

    def verify(path, *extra):
        return _lifecycle(auditor, "proof", "verify", str(path), "--public-key", str(pipeline_key), *extra)

    ok = verify(cert, "--store-keys", str(stores))
    assert ok.returncode == 0 and b"valid" in ok.stdout and ok.stdout.count(b"its own signature") == 4, ok
    assert verify(cert).returncode == 2  # the pipeline's word alone is not the stores'

    signing = proofs.load_signing_key(settings, create=False)  # what a dishonest pipeline holds

    def forged(change) -> bytes:
        altered = json.loads(json.dumps(body))
        change(altered["stores"][0])
        return proofs.sign(altered, signing)

    def more_erased(entry):  # the certificate claims more than the store said, receipt untouched
        entry["items_erased"] += 5

    def rewritten(entry):  # the receipt itself rewritten, its signature left as the store made it
        said = json.loads(entry["ack_receipt"]["statement"])
        said["items_erased"] += 5
        entry["ack_receipt"]["statement"] = json.dumps(said, sort_keys=True, separators=(",", ":"))
        entry["items_erased"] = said["items_erased"]

    def pipeline_signed(entry):  # rewritten, and signed with the pipeline's key instead of the store's
        rewritten(entry)
        statement = entry["ack_receipt"]["statement"].encode()
        entry["ack_receipt"]["signature"] = "ed25519:" + base64.b64encode(signing.sign(statement)).decode()

    for change in (more_erased, rewritten, pipeline_signed):
        path = tmp_path / f"{change.__name__}.json"
        path.write_bytes(forged(change))
        refused = verify(path, "--store-keys", str(stores))
        assert refused.returncode == 1 and b"REFUSED" in refused.stderr, (change.__name__, refused)

    # A v1 certificate (before issue 26) still verifies, as v1.
    v1 = {k: v for k, v in body.items() if k != "format"} | {"format": proofs.FORMAT_V1}
    v1["stores"] = [{k: v for k, v in s.items() if k not in ("ack_receipt", "verify_receipt", "store_key")}
                    for s in body["stores"]]
    old = tmp_path / "v1.json"
    old.write_bytes(proofs.sign(v1, signing))
    as_v1 = verify(old)
    assert as_v1.returncode == 0 and b"v1 certificate" in as_v1.stdout, as_v1
