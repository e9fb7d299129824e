"""A store written without this project's code (examples/foreign_store.py) joins the protocol."""

from __future__ import annotations

import dataclasses
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
from tests.fix_servers import WorkerProcess
from tests.helpers import HOUR, T0, event, wait_for
from tests.integration.erasure.test_erasure import _complete, _emit


def test_a_foreign_store_acknowledges_and_completes_the_erasure(settings, tmp_path):
    settings = dataclasses.replace(settings, erasure_stores=("crm",))
    data = tmp_path / "crm.json"
    data.write_text(json.dumps({"acc-crm": [{"note": "called"}, {"note": "emailed"}], "acc-other": [{}]}))
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    store = None
    try:
        worker.start()
        key = tmp_path / "crm.key"  # the registration step a store's owner is handed its key by
        added = subprocess.run([sys.executable, "-m", "lifecycle", "store", "add", "crm", "--out", str(key)],
                               env={**os.environ, **settings.to_env()}, capture_output=True, timeout=60)
        assert added.returncode == 0, added.stderr.decode()
        order_key = tmp_path / "order.pub"  # the pipeline's published order key
        published = subprocess.run([sys.executable, "-m", "lifecycle", "orders", "key", "--raw"],
                                   env={**os.environ, **settings.to_env()}, capture_output=True, timeout=60)
        assert published.returncode == 0, published.stderr.decode()
        order_key.write_bytes(published.stdout)
        with open(tmp_path / "crm.log", "wb") as log:
            store = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "examples" / "foreign_store.py"),
                                      "--bootstrap", settings.kafka_bootstrap, "--prefix", settings.topic_prefix,
                                      "--store", "crm", "--data", str(data), "--key-file", str(key),
                                      "--order-key", str(order_key)],
                                     stdout=log, stderr=subprocess.STDOUT)
        _emit(settings, event("account.registered", T0, account="acc-crm", email="c@example.test", first_name="C",
                              last_name="R"))
        # An access order first (docs/access.md): the store's answer, sealed and signed, is the archive.
        body = wait_for(lambda: _exported(settings, worker, "acc-crm"), deadline_s=60, what="the access archive")
        manifest = json.loads(zipfile.ZipFile(io.BytesIO(body)).read("manifest.json"))
        assert [f["store"] for f in manifest["files"]] == ["crm"]
        assert json.loads(zipfile.ZipFile(io.BytesIO(body)).read("stores/crm.json"))["data"] == \
            {"records": {"acc-crm": [{"note": "called"}, {"note": "emailed"}]}}
        _emit(settings, event("account.closed", T0 + HOUR, account="acc-crm"))
        answer = wait_for(lambda: _complete(worker, "acc-crm"), deadline_s=60, what="the foreign store's ack")
        [crm] = answer["erasures"][0]["stores"]
        assert (crm["store"], crm["status"], crm["items_erased"]) == ("crm", "erased", 2)
        assert json.loads(data.read_text()) == {"acc-other": [{}]}
    finally:
        if store is not None:
            stop_process(store, signal.SIGTERM, timeout_s=10)
        worker.stop()


def _exported(settings, worker, account):
    status, body = http_get(worker.url(f"/v1/accounts/{account}/export"), timeout_s=10, token=settings.read_token)
    return body if status == 200 else None
