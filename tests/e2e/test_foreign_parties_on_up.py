"""Another team's store and another team's producer join a stack that `lifecycle up` runs, each
written from docs/protocol.md alone (examples/foreign_store.py, examples/producer.py), as an
operator would set it up: `up` on the company's broker and database, then `lifecycle store add`
and nothing else (the built-in stores are not restated). The store is never started by `up`; the
erasure waits for it, completes, verifies, and its certificate checks out offline."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import zipfile

from lifecycle.core.config import PROJECT_ROOT
from lifecycle.embedded.process import stop_process
from lifecycle.supervisor import http_get
from tests.e2e.test_cli import _wait_ready
from tests.helpers import T0, wait_for
from tests.procs import wait_until_gone
from tests.unit.samples import PII

STORE = "acme-crm"


def _run(env, *args, timeout=120):
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, timeout=timeout)


def test_a_foreign_store_and_producer_join_a_stack_run_by_up(settings, tmp_path):
    assert STORE not in settings.erasure_stores
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env = {**base, **settings.to_env()}  # `up` on an external broker and database (no embedded server)
    # The operator's commands name nothing but the state folder: they find the stack through
    # <state>/run/stack.json, which `up` writes on external servers too.
    operator = {**base, "LIFECYCLE_STATE_DIR": str(settings.state_dir)}
    url = f"http://127.0.0.1:{settings.http_port}"
    with open(tmp_path / "up.log", "wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "lifecycle", "up"], env=env, stdout=out, stderr=subprocess.STDOUT)
    store = None
    try:
        _wait_ready(env, up, deadline_s=120)
        stack = json.loads(wait_for(lambda: _read(settings.state_dir / "run" / "stack.json"), what="stack.json"))
        assert stack["owner"] == up.pid and stack["postgres_dsn"] == settings.postgres_dsn

        key = tmp_path / f"{STORE}.key"
        added = _run(operator, "-m", "lifecycle", "store", "add", STORE, "--out", str(key))
        assert added.returncode == 0, added.stderr.decode()
        assert b"every erasure opened from now on waits for its answer" in added.stderr
        published = _run(operator, "-m", "lifecycle", "orders", "key", "--raw")
        assert published.returncode == 0, published.stderr.decode()
        (tmp_path / "order.pub").write_bytes(published.stdout)

        data = tmp_path / "crm.json"
        data.write_text(json.dumps({"acc-up": [{"note": "called"}], "acc-other": [{"note": "kept"}]}))
        with open(tmp_path / "store.log", "wb") as log:
            store = subprocess.Popen(
                [sys.executable, str(PROJECT_ROOT / "examples" / "foreign_store.py"), "--bootstrap",
                 settings.kafka_bootstrap, "--prefix", settings.topic_prefix, "--store", STORE, "--data", str(data),
                 "--key-file", str(key), "--order-key", str(tmp_path / "order.pub")],
                stdout=log, stderr=subprocess.STDOUT)

        _produce(settings, base, tmp_path, {"event_type": "account.registered", "occurred_at": T0,
                                            "account_id": "acc-up", "source": "acme", "email": PII["email"],
                                            "first_name": PII["first_name"], "last_name": PII["last_name"]})
        archive = wait_for(lambda: _ok(http_get(f"{url}/v1/accounts/acc-up/export", 10, settings.read_token)),
                           deadline_s=90, what="the access archive")
        files = zipfile.ZipFile(io.BytesIO(archive))
        manifest = json.loads(files.read("manifest.json"))
        assert STORE in [f["store"] for f in manifest["files"]]
        assert json.loads(files.read(f"stores/{STORE}.json"))["data"] == {"records": {"acc-up": [{"note": "called"}]}}
        # Sealed by the producer under the key service's key, opened by the pipeline: the archive
        # holds the address in clear, and the pipeline counted no field arriving in clear.
        assert PII["email"] in b"".join(files.read(n) for n in files.namelist()).decode()
        assert _sum(url, "lifecycle_clear_personal_fields_total") == 0

        _produce(settings, base, tmp_path, {"event_type": "account.closed", "occurred_at": T0 + 3_600_000,
                                            "account_id": "acc-up", "source": "acme"})
        answer = wait_for(lambda: _complete(url, settings.read_token), deadline_s=120, what="the erasure")
        stores = {s["store"]: s for s in answer["stores"]}
        assert set(stores) == {*settings.erasure_stores, STORE}
        assert (stores[STORE]["status"], stores[STORE]["items_erased"]) == ("erased", 1)
        assert stores[STORE]["verified_at"] is not None
        assert json.loads(data.read_text()) == {"acc-other": [{"note": "kept"}]}

        cert = tmp_path / "certificate.json"
        exported = _run(operator, "-m", "lifecycle", "proof", "export", answer["request_id"], "--out", str(cert))
        assert exported.returncode == 0, exported.stderr.decode()
        (tmp_path / "proof.pub").write_bytes(_run(operator, "-m", "lifecycle", "proof", "key", "--raw").stdout)
        (tmp_path / "stores.json").write_bytes(_run(operator, "-m", "lifecycle", "store", "keys").stdout)
        auditor = {**base, "LIFECYCLE_STATE_DIR": str(tmp_path / "auditor")}
        checked = _run(auditor, "-m", "lifecycle", "proof", "verify", str(cert), "--public-key",
                       str(tmp_path / "proof.pub"), "--store-keys", str(tmp_path / "stores.json"))
        assert checked.returncode == 0, checked.stderr.decode()

        listed = _run(operator, "-m", "lifecycle", "store", "list", "--json")
        assert listed.returncode == 0, listed.stderr.decode()
        [row] = [r for r in json.loads(listed.stdout) if r["store"] == STORE]
        assert (row["shipped"], row["origin"], row["waited_for"], row["signing_key"], row["pending"]) == \
            (False, "registered", True, True, 0)
    finally:
        if store is not None:
            stop_process(store, signal.SIGTERM, timeout_s=10)
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        finally:
            stop_process(up, signal.SIGKILL, timeout_s=1)
        assert wait_until_gone(str(settings.state_dir)) == []
    log = (tmp_path / "up.log").read_text()
    assert f"connector {STORE}" not in log and "unknown store" not in log
    assert f"console: http://127.0.0.1:{settings.http_port}/console (sign in with the read token " \
           f"{settings.read_token})" in log


def _produce(settings, base, tmp_path, event):
    """examples/producer.py: sealed through the key service, straight onto the topic."""
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(event) + "\n")
    sent = _run({**base, "LIFECYCLE_KEYS_TOKEN": settings.keys_token},
                str(PROJECT_ROOT / "examples" / "producer.py"), "--bootstrap", settings.kafka_bootstrap,
                "--prefix", settings.topic_prefix, "--keys-url", f"http://127.0.0.1:{settings.http_port}",
                "--file", str(events))
    assert sent.returncode == 0 and sent.stdout.startswith(b"sent "), sent.stdout + sent.stderr


def _sum(url, name):
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(f"{url}/metrics")
    assert status == 200
    return sum(s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples if s.name == name)


def _read(path):
    try:
        return path.read_text()
    except OSError:
        return None


def _ok(answer):
    status, body = answer
    return body if status == 200 else None


def _complete(url, token):
    status, body = http_get(f"{url}/v1/accounts/acc-up/erasure", 10, token)
    if status != 200:
        return None
    [erasure] = json.loads(body)["erasures"]
    return erasure if erasure["state"] == "complete" else None
