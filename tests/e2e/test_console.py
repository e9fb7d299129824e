"""The privacy console (issue 28) in a real Chromium (Debian's, driven by Playwright), against a
worker, four stores and a store of another team that never answers, on the real broker and
PostgreSQL: sign in with a read token (an ingest token and a wrong one are refused), see an
erasure complete across four stores with its timeline, download its certificate and see it
verified, filter to the overdue one, look an account up by id; no page and no response carries the
seeded personal data, and no request leaves 127.0.0.1."""

from __future__ import annotations

import json
import time
import urllib.parse

import psycopg
import pytest

from lifecycle import proofs
from lifecycle.embedded.process import free_port
from lifecycle.store_registry import join
from tests.browser import chromium
from tests.fix_servers import ChildProcess, WorkerProcess
from tests.helpers import HOUR, T0, emit, erasure_answer, event, lifecycle_cli, wait_for
from tests.unit.samples import PII

DAY = 24 * HOUR
DONE, LATE, VISITOR = "acc-console-done", "acc-console-late", "vis-console-1"


@pytest.fixture
def stack(settings, tmp_path):
    """A worker that trusts the published proof key, and a connector per shipped store."""
    key = tmp_path / "proof.pub"
    key.write_text(proofs.public_key_text(proofs.load_signing_key(settings))["public_key"] + "\n")
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.extra_env["LIFECYCLE_PROOF_TRUST_FILE"] = str(key)
    stores = [ChildProcess(settings, tmp_path / f"connector-{s}.log", ["connector", s],
                           {"LIFECYCLE_METRICS_PORT": str(free_port())}) for s in settings.erasure_stores]
    try:
        worker.start()
        for store in stores:
            store.spawn()
        yield worker
    finally:
        for store in stores:
            store.stop()
        worker.stop()


def _seed(settings, worker):
    personal = dict(email=PII["email"], first_name=PII["first_name"], last_name=PII["last_name"], phone=PII["phone"])
    emit(settings, event("account.registered", T0, account=DONE, **personal),
         event("consent.cookies_granted", T0 + 1, account=DONE, purposes=["analytics"], policy_version="v7"),
         event("account.closed", T0 + HOUR, account=DONE))
    wait_for(lambda: (a := erasure_answer(worker, DONE)) and a["erasures"][0]["state"] == "complete",
             deadline_s=90, what="the erasure across four stores")
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        [rid] = [str(r[0]) for r in conn.execute("SELECT request_id FROM erasure_proofs")]
        join(settings.postgres_dsn, conn, "ghost-crm")  # a store of another team that never answers
    exported = lifecycle_cli(settings, "proof", "export", rid, "--out", "/dev/null")
    assert exported.returncode == 0, exported.stderr.decode()
    emit(settings, event("account.registered", T0 + 2 * HOUR, account=LATE, **personal),
         event("account.closed", T0 + 3 * HOUR, account=LATE),
         event("consent.cookies_granted", T0 + 4 * HOUR, visitor=VISITOR, purposes=["preferences"],
               policy_version="v7"),
         event("account.registered", T0 + 40 * DAY, account="acc-console-clock", email="x@example.test",
               first_name="X", last_name="Y"))  # the event clock moves past LATE's deadline
    wait_for(lambda: (a := erasure_answer(worker, LATE)) and a["erasures"][0]["overdue"], deadline_s=60,
             what="the erasure that waits for ghost-crm to be overdue")
    return rid


def test_the_console_in_chromium(settings, stack, tmp_path):
    rid = _seed(settings, stack)
    base = stack.url("")
    origin = urllib.parse.urlsplit(base).netloc
    requests, bodies = [], []
    with chromium() as browser:
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("response", lambda r: bodies.append(_body(r)))

        page.goto(base + "/console")
        assert page.url.endswith("/console/sign-in")
        for wrong in (settings.http_token, "not-a-token-at-all"):  # ingest scope, and nothing at all
            page.fill("input[name=token]", wrong)
            page.click("button[type=submit]")
            assert "Not a token of scope read" in page.inner_text("main")
            assert context.cookies() == []
        page.fill("input[name=token]", settings.read_token)
        page.click("button[type=submit]")
        assert page.url == base + "/console"
        [cookie] = context.cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == ("lifecycle_console", True, "Strict")
        assert time.time() < cookie["expires"] <= time.time() + 8 * 3600 + 60
        overview = page.inner_text("main")
        assert "Erasures open" in overview and "Overdue" in overview and "ghost-crm" in overview
        assert page.locator("svg").count() == 2  # time to proof, erasures per day

        page.click("nav >> text=Erasures")
        page.click(f"a:has-text('{rid}')")
        timeline = page.inner_text("main")
        for store in settings.erasure_stores:
            assert f"order to {store}" in timeline and f"{store} verified: 0 item(s) left" in timeline
        assert "postgres answered erased" in timeline  # the store that held the profile
        assert "complete: every store erased and verified" in timeline and "certificate issued" in timeline
        assert "Verified: signed by the published proof key" in timeline
        with page.expect_download() as download:
            page.click("text=Download the certificate")
        certificate = download.value.path().read_bytes()
        published = proofs.public_key_text(proofs.load_signing_key(settings))["public_key"]
        assert proofs.verify(certificate, published)["request_id"] == rid

        page.goto(base + "/console/erasures")
        page.check("input[name=overdue]")
        page.click("form.filters >> text=Filter")
        listed = page.inner_text("main")
        assert "1 erasure(s)" in listed and rid not in listed and "ghost-crm" in listed and "overdue" in listed

        page.fill("input[name=id]", DONE)  # by keyed hash: the id itself is shown nowhere
        page.click("button:has-text('Look up')")
        assert rid in page.inner_text("main") and "1 erasure(s)" in page.inner_text("main")

        page.click("nav >> text=Record of processing")
        assert "account_profile" in page.inner_text("main")
        page.click("nav >> text=Consent receipts")
        page.fill("input[name=id]", VISITOR)
        page.click("button:has-text('Show receipts')")
        receipts = page.inner_text("main")
        assert "receipt_format" in receipts and "preferences" in receipts

        page.click("button:has-text('Sign out')")
        assert page.url.endswith("/console/sign-in")
        page.goto(base + "/console")
        assert page.url.endswith("/console/sign-in")
        context.close()

    assert requests and all(urllib.parse.urlsplit(u).netloc == origin for u in requests), \
        [u for u in requests if urllib.parse.urlsplit(u).netloc != origin]
    seen = b"\n".join(b for b in bodies if b)
    for value in (*PII.values(), DONE, LATE, VISITOR):
        assert value.encode() not in seen, f"{value!r} reached the browser"


def _body(response):
    try:
        return response.body()
    except Exception:  # a redirect has none
        return b""


def _get(worker, path, method="GET", body=None, cookie=None):
    """One request, redirects not followed: (status, headers, body)."""
    import http.client

    conn = http.client.HTTPConnection(worker.settings.http_host, worker.settings.http_port, timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        if cookie:
            headers["Cookie"] = cookie
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def test_the_console_refuses_without_a_session(settings, worker):
    for path in ("/console", "/console/erasures", "/console/records", "/console/consent",
                 f"/console/erasures/{'0' * 8}-0000-0000-0000-{'0' * 12}/certificate"):
        status, headers, _ = _get(worker, path)
        assert (status, headers["Location"]) == (303, "/console/sign-in"), path
    assert _get(worker, "/console/nothing-here")[0] == 404
    assert _get(worker, "/console", cookie="lifecycle_console=forged")[0] == 303
    status, headers, body = _get(worker, "/console/sign-in")
    assert status == 200 and b"<script" not in body and "default-src 'none'" in headers["Content-Security-Policy"]
    for token in (settings.http_token, settings.keys_token, "x" * 40):
        status, headers, _ = _get(worker, "/console/sign-in", "POST", urllib.parse.urlencode({"token": token}))
        assert status == 401 and "Set-Cookie" not in headers
    signing_in = urllib.parse.urlencode({"token": settings.read_token})
    status, headers, _ = _get(worker, "/console/sign-in", "POST", signing_in)
    assert status == 303 and headers["Location"] == "/console"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=28800" in cookie
    session = cookie.split(";")[0]
    assert _get(worker, "/console", cookie=session)[0] == 200
    assert _get(worker, "/console/sign-out", "POST", "", cookie=session)[0] == 303
    assert _get(worker, "/console", cookie=session)[0] == 303  # signed out: the session is gone
    assert json.loads(_get(worker, "/openapi.json")[2])["paths"]["/console"]["get"]["security"] == [{"session": []}]


def test_after_the_demo_a_person_finds_its_erasures_and_a_certificate(tmp_path):
    """Issue 28's bar: someone who ran only the demo opens the printed address, signs in with the
    printed token and finds the demo's erasures and one certificate, well within a minute."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from lifecycle.embedded.process import stop_process
    from tests.procs import wait_until_gone

    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(LIFECYCLE_STATE_DIR=str(state), LIFECYCLE_HTTP_PORT=str(free_port()))
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen([sys.executable, "-m", "lifecycle", "demo", "--accounts", "60", "--visitors", "60",
                                 "--serve", "300"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        line = wait_for(lambda: re.search(r"console: (http://\S+) \(sign in with the read token (\S+)\); the "
                                          r"pipeline keeps serving it", log.read_text()), deadline_s=240,
                        what="the demo's console line")
        address, token = line.group(1), line.group(2)
        started = time.monotonic()
        with chromium() as browser:
            page = browser.new_page()
            page.goto(address)
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            assert "Complete" in page.inner_text("main")
            page.click("nav >> text=Erasures")
            assert "erasure(s)" in page.inner_text("main")
            page.click("tbody tr:first-child a")
            found = page.inner_text("main")
            assert "Verified: signed by the published proof key" in found and "Download the certificate" in found
        elapsed = time.monotonic() - started
        print(f"from the demo's console line to a verified certificate: {elapsed:.1f} s")
        assert elapsed < 60
        demo.send_signal(signal.SIGINT)
        assert demo.wait(90) == 0, log.read_text()[-2000:]
    finally:
        stop_process(demo, signal.SIGKILL, timeout_s=1)
        assert wait_until_gone(str(state)) == []
