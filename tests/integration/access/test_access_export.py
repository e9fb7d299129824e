"""Access and portability (issue 16): `GET /v1/accounts/{id}/export` gathers what every store
holds through an access order on the topics, into one archive (a JSON file per store, a manifest
with hashes, provided and derived data, recipients); the answers cross the log sealed, the
request's private key and the account id are gone once it is assembled, and the account's
erasure deletes the archive. `lifecycle export ACCOUNT --archive FILE` writes the same."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

import psycopg
from kafka import KafkaConsumer, TopicPartition

from lifecycle.supervisor import http_get
from tests.helpers import DAY, T0, emit, event, metric, wait_for
from tests.integration.erasure.test_erasure import _complete, _life_of, _seed_outside_stores
from tests.unit.samples import PII

ACCOUNT, VISITOR, OTHER = "acc-access", "vis-access", "acc-access-other"


def _archive(settings, worker, account):
    """GET the export until the archive comes; (answers seen while waiting, the zip's bytes, headers)."""
    url = worker.url(f"/v1/accounts/{account}/export")
    seen = []

    def fetched():
        import urllib.request

        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {settings.read_token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                body = resp.read()
                if resp.status == 200:
                    return body, dict(resp.headers)
                seen.append((resp.status, json.loads(body)))
        except urllib.error.HTTPError as exc:
            seen.append((exc.code, exc.read()))
        return None

    body, headers = wait_for(fetched, deadline_s=60, what="the access archive")
    return seen, body, headers


def test_every_store_answers_an_access_order_into_one_archive(settings, worker, connectors, tmp_path):
    emit(settings, *_life_of(ACCOUNT, VISITOR), event("account.registered", T0, account=OTHER, email="o@example.test",
                                                     first_name="O", last_name="T"))
    _seed_outside_stores(settings, ACCOUNT)
    wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_session_logs_written_total") >= 1, what="the log")
    wait_for(lambda: _listed(settings, ACCOUNT), what="the mailing list synced with the audience")

    seen, body, headers = _archive(settings, worker, ACCOUNT)
    assert seen and seen[0][0] == 202 and {s["store"] for s in seen[0][1]["stores"]} == set(settings.erasure_stores)
    assert headers["Content-Type"].startswith("application/zip")
    assert headers["X-Archive-SHA256"] == hashlib.sha256(body).hexdigest()
    archive = zipfile.ZipFile(io.BytesIO(body))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["format"] == "lifecycle-access-archive/1"
    assert sorted(f["store"] for f in manifest["files"]) == sorted(settings.erasure_stores)
    for entry in manifest["files"]:
        assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"], entry["path"]
    assert {r["store"] for r in manifest["recipients"]} == set(settings.erasure_stores)
    assert "account_profile" in manifest["provided"] and "session_logs" in manifest["observed"]
    assert manifest["categories"]["account_profile"]["purpose"]

    stores = {f["store"]: json.loads(archive.read(f["path"])) for f in manifest["files"]}
    pg = stores["postgres"]["data"]
    assert [r["email"] for r in pg["accounts"]] == [PII["email"]]
    assert [r["session_id"] for r in pg["session_logs"]] == [f"{ACCOUNT}-s1"]
    assert [r["visitor_id"] for r in pg["account_visitors"]] == [VISITOR]
    assert {r["purpose"] for r in pg["consent_current"]} >= {"analytics"} and pg["failed_logins"]
    assert not any(OTHER in json.dumps(s) for s in stores.values())  # nobody else's data
    files = {f["path"]: f for f in stores["files"]["data"]["files"]}
    assert set(files) == {"documents/contract.pdf", "settings.json"}
    assert json.loads(base64.b64decode(files["settings.json"]["content_base64"])) == \
        {"owner": PII["email"]}
    assert set(stores["redis"]["data"]["keys"]) == {f"cache:{{{ACCOUNT}}}:profile", f"session:{{{ACCOUNT}}}:s2"}
    assert stores["redis"]["data"]["listed_in"] == ["lifecycle:index:active"]
    assert [m["email"] for m in stores["mailing-list"]["data"]["list_members"]] == [PII["email"]]

    with psycopg.connect(settings.postgres_dsn) as conn:
        kept = conn.execute("SELECT state, box_key, account_id, subjects FROM access_requests").fetchall()
        assert kept == [("complete", None, None, None)]  # the private key and the ids are gone
        assert conn.execute("SELECT count(*) FROM access_parts").fetchone()[0] == 0
    _, again, _ = _archive(settings, worker, ACCOUNT)
    assert again == body  # the kept archive, not a second request
    assert metric(worker.url("/metrics"), "lifecycle_access_requests_opened_total") == 1
    assert metric(worker.url("/metrics"), "lifecycle_access_requests_completed_total") == 1
    assert _nothing_clear_on(settings, "erasure-acks", PII["email"].encode(), PII["last_name"].encode())

    # The CLI writes the other account's archive.
    out = tmp_path / "other.zip"
    done = subprocess.run([sys.executable, "-m", "lifecycle", "export", OTHER, "--archive", str(out), "--wait", "60"],
                          env={**os.environ, **settings.to_env()}, capture_output=True, timeout=90)
    assert done.returncode == 0, done.stderr.decode()
    other = zipfile.ZipFile(out)
    assert json.loads(other.read("stores/postgres.json"))["data"]["accounts"][0]["email"] == "o@example.test"
    assert json.loads(done.stdout)["state"] == "complete"

    # The account closes: its archive goes with the rest, and no new one can be opened.
    emit(settings, event("account.closed", T0 + 2 * DAY, account=ACCOUNT))
    wait_for(lambda: _complete(worker, ACCOUNT), deadline_s=90, what="the erasure complete")
    with psycopg.connect(settings.postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM access_requests").fetchone()[0] == 1  # the other account's
    assert http_get(worker.url(f"/v1/accounts/{ACCOUNT}/export"), timeout_s=10, token=settings.read_token)[0] == 404

    # The report a person reads (issue 29), last: it needs Chromium (tests/browser.py).
    report = archive.read("report.html")
    assert hashlib.sha256(report).hexdigest() == manifest["report"]["sha256"]
    seeded = [PII["email"], PII["first_name"], PII["last_name"], VISITOR, f"{ACCOUNT}-s1", "documents/contract.pdf",
              f"cache:{{{ACCOUNT}}}:profile"]
    _report_reads_in_chromium(report, tmp_path, seeded)


def _report_reads_in_chromium(report, tmp_path, seeded):
    """report.html opened from disk in Chromium: every seeded value on the page, in plain words why
    and how long, and no request beyond the file itself."""
    from tests.browser import chromium

    path = tmp_path / "report.html"
    path.write_bytes(report)
    requests = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        text = page.inner_text("body")
        assert page.locator("script").count() == 0
        page.pdf(path=str(tmp_path / "report.pdf"))  # it prints (headless Chromium's print path)
    missing = [v for v in seeded if v not in text]
    assert missing == [], f"not on the page: {missing}"
    for words in ("Why we keep it", "For how long", "necessary to establish your account with us",
                  "you gave it to us", "Your rights"):
        assert words in text, words
    assert requests == [path.as_uri()], requests


def _listed(settings, account):
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        try:
            return conn.execute("SELECT count(*) FROM mailing.list_members WHERE account_id = %s",
                                (account,)).fetchone()[0] == 1
        except psycopg.errors.UndefinedTable:  # the connector creates its schema on first use
            return False


def _nothing_clear_on(settings, topic, *needles):
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, consumer_timeout_ms=2000,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(settings.topic(topic), p) for p in range(4)]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        values = [msg.value or b"" for msg in consumer]
        assert values, "no record read"
        return not any(n in v for v in values for n in needles)
    finally:
        consumer.close()
