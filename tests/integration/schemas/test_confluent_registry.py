"""The Confluent Schema Registry client against a registry speaking the REST API over HTTP.

No Confluent registry can be installed here, so the server is a small implementation of the
three endpoints the client uses (register, look up by id), on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lifecycle.schemas import Codec, ConfluentRegistry, load_catalog
from lifecycle.schemas.errors import RegistryError, UnknownSchemaId
from tests.unit.samples import sample


class _Registry(BaseHTTPRequestHandler):
    schemas: dict = {}
    subjects: dict = {}
    down = False  # answer 503 to everything, as a registry in an outage does

    def _answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        if self.down:
            return self._answer(503, {"error_code": 50301})
        parts = self.path.strip("/").split("/")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
            return self._answer(404, {"error_code": 404})
        text = body["schema"]
        sid = next((known for known, existing in self.schemas.items() if existing == text), None)
        if sid is None:
            sid = len(self.schemas) + 1
            self.schemas[sid] = text
        self.subjects.setdefault(parts[1], []).append(sid)
        return self._answer(200, {"id": sid})

    def do_GET(self):  # noqa: N802
        if self.down:
            return self._answer(503, {"error_code": 50301})
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and int(parts[2]) in self.schemas:
            return self._answer(200, {"schema": self.schemas[int(parts[2])]})
        return self._answer(404, {"error_code": 40403, "message": "Schema not found"})

    def log_message(self, *args):
        pass


@pytest.fixture
def registry_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_registers_under_topic_record_subject_and_reads_back(registry_url):
    record = load_catalog().by_event_type("consent.cookies_granted")
    writer = Codec(ConfluentRegistry(registry_url), topic_prefix="lifecycle.")
    data = writer.encode(record, sample(record))
    assert data[1:5] == (1).to_bytes(4, "big")
    assert "lifecycle.consent-events-lifecycle.events.ConsentCookiesGranted" in _Registry.subjects
    reader = Codec(ConfluentRegistry(registry_url))  # a fresh cache: fetches the schema by id
    assert reader.decode(data, topic="consent-events").value == sample(record) | {
        "event_id": reader.decode(data).value["event_id"]}


def test_unknown_id_and_unreachable_registry(registry_url):
    with pytest.raises(UnknownSchemaId):
        ConfluentRegistry(registry_url).schema_for(9999)
    with pytest.raises(RegistryError):
        ConfluentRegistry("http://127.0.0.1:9", timeout_s=0.5).schema_for(1)


def test_a_registry_outage_is_waited_out_not_a_crash(settings, registry_url, tmp_path):
    """The worker meets an unknown schema id while the registry answers 503: it retries with
    backoff and counts it, stays up, and applies the event once the registry is back."""
    import dataclasses

    from tests.fix_servers import WorkerProcess
    from tests.helpers import T0, event, metric, wait_for

    s = dataclasses.replace(settings, schema_registry_url=registry_url)
    worker = WorkerProcess(s, tmp_path / "worker.log")
    try:
        worker.start()
        record = load_catalog().by_event_type("consent.cookies_granted")
        value = event("consent.cookies_granted", T0, account="acc-registry", purposes=["analytics"],
                      policy_version="2026-01")
        data = Codec(ConfluentRegistry(registry_url), topic_prefix=s.topic_prefix).encode(record, {
            **value, "event_id": value["event_id"]})
        _Registry.down = True
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        producer.send(s.topic("consent-events"), key=b"acc-registry", value=data).get(timeout=10)
        producer.close()
        wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_schema_registry_errors_total", stage="intake") >= 2,
                 what="the outage to be retried and counted")
        assert worker.alive()
        assert metric(worker.url("/metrics"), "lifecycle_dead_letters_written_total") == 0
        _Registry.down = False
        wait_for(lambda: metric(worker.url("/metrics"), "lifecycle_events_ingested_total",
                                event_type="consent.cookies_granted") == 1, what="the event once the registry is back")
    finally:
        _Registry.down = False
        worker.stop()
