"""The embedded default keeps what it answered 202 (issue 13), driven as a user drives it: `lifecycle
up`, HTTP, the state folder's `run/stack.json`, PostgreSQL, a Kafka client and the CLI. PostgreSQL is
the durable part; the embedded broker keeps its log in memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
from kafka import KafkaConsumer, TopicPartition

from lifecycle.embedded.process import free_port, stop_process
from lifecycle.schemas import Codec
from lifecycle.supervisor import http_get
from tests.helpers import T0, post, wait_for
from tests.procs import wait_until_gone

TOKEN = "durable-test-token"


class Up:
    """`lifecycle up` on a state folder: started, driven over HTTP, and always stopped."""

    def __init__(self, tmp: Path, name: str = "up"):
        self.state = tmp / "state"
        self.tmp = tmp
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
        env.update({"LIFECYCLE_STATE_DIR": str(self.state), "LIFECYCLE_HTTP_PORT": str(self.port),
                    "LIFECYCLE_HTTP_TOKEN": TOKEN, "LIFECYCLE_EMBEDDED_PG_FAST": "true"})
        return env

    @property
    def log(self) -> Path:
        return self.tmp / f"{self.name}-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "lifecycle", "up"], env=self.env(), stdout=out,
                                         stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, deadline_s: float = 120) -> None:
        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"`up` exited; see {self.log}"
            try:
                info = self.stack()  # this run's, not one a killed run left behind
                return http_get(self.url("/readyz"), timeout_s=1)[0] == 200 and bool(info) and \
                    info["owner"] == self.proc.pid
            except OSError:
                return False

        wait_for(ready, deadline_s=deadline_s, what=f"`lifecycle up` ready (log: {self.log})")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stack(self) -> dict | None:
        try:
            return json.loads((self.state / "run" / "stack.json").read_text())
        except (OSError, ValueError):
            return None

    def post(self, events: list[dict]) -> list[str]:
        status, body = post(self.url("/v1/events"), events, TOKEN)
        assert status == 202, body
        return body["event_ids"]

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        info = self.stack()
        assert info is not None
        with psycopg.connect(info["postgres_dsn"]) as conn:
            return conn.execute(query, params).fetchall()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(90)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            finally:
                stop_process(self.proc, signal.SIGKILL, timeout_s=1)
        assert wait_until_gone(str(self.state)) == [], "processes left behind"

    def child_pid(self, word: str) -> int:
        """The pid of the child whose recorded command contains ``word`` (from the run's ledger)."""
        ledger = json.loads((self.state / "run" / "ledger.json").read_text())
        pids = [c["pid"] for c in ledger["children"] if word in _cmdline(c["pid"])]
        assert pids, ledger
        return pids[-1]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in self.env().items() if k != "LIFECYCLE_HTTP_PORT"}
        return subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, capture_output=True, text=True,
                              timeout=120)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _grants(n: int, tag: str, start: int = 0) -> list[dict]:
    return [{"event_id": str(uuid.uuid4()), "event_type": "consent.cookies_granted", "occurred_at": T0 + start + i,
             "account_id": f"acc-{tag}-{start + i:04d}", "visitor_id": None, "source": "durable-test",
             "purposes": ["analytics"], "policy_version": "2026-01"} for i in range(n)]


def _applied(up: Up, ids: list[str]) -> int:
    rows = up.sql("SELECT count(*) FROM consent_history WHERE event_id = ANY(%s::uuid[])", (ids,))
    return int(rows[0][0])


def _exactly_once(up: Up, ids: list[str], posted: list[str] | None = None) -> None:
    """Every accepted event applied, none twice, nothing applied that was not posted. ``posted``:
    every event sent, answered or not (one whose answer was lost may be applied: its sender,
    having no 202, sends it again with the same id)."""
    wait_for(lambda: _applied(up, ids) == len(ids), deadline_s=120, what=f"{len(ids)} accepted events applied")
    wait_for(lambda: up.sql("SELECT count(*) FROM ingest_journal") == [(0,)], what="the journal emptied")
    rows = up.sql("SELECT event_id::text FROM consent_history")
    applied = [r[0] for r in rows]
    assert len(applied) == len(set(applied))
    assert set(applied) <= set(posted if posted is not None else ids)
    if posted is None:
        assert len(applied) == len(ids)


def test_ctrl_c_and_start_again_loses_nothing(tmp_path):
    up = Up(tmp_path)
    try:
        up.start()
        first = up.post(_grants(50, "ctrlc"))
        wait_for(lambda: _applied(up, first) == 50, deadline_s=60, what="the first 50 events")
        up.signal(signal.SIGINT)
        assert "drained" in up.log.read_text()
        up.start()
        second = up.post(_grants(50, "ctrlc", start=50))
        _exactly_once(up, first + second)
    finally:
        up.stop()


def test_sigkill_right_after_202_loses_nothing(tmp_path):
    up = Up(tmp_path)
    try:
        up.start()
        ids = []
        for batch in range(4):
            ids += up.post(_grants(50, "kill", start=batch * 50))
        up.signal(signal.SIGKILL)
        assert wait_until_gone(str(up.state)) == []
        up.start()
        _exactly_once(up, ids)
    finally:
        up.stop()


def _last_by_key(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return {msg.key: msg.value for msg in consumer}
    finally:
        consumer.close()


def test_the_broker_killed_under_load_loses_nothing_and_the_state_topics_come_back(tmp_path):
    up = Up(tmp_path)
    accepted: list[str] = []
    posted: list[str] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            batch = _grants(20, "load", start=n)
            posted.extend(e["event_id"] for e in batch)
            try:
                status, body = post(up.url("/v1/events"), batch, TOKEN)
                if status == 202:
                    accepted.extend(body["event_ids"])
            except OSError:
                pass  # the worker is restarting with the broker: not accepted, not counted
            n += 20
            time.sleep(0.05)

    try:
        up.start()
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(3)
        os.kill(up.child_pid("tansu"), signal.SIGKILL)
        wait_for(lambda: "embedded broker restarted" in up.log.read_text(), deadline_s=60, what="the broker restarted")
        up.wait_ready()
        time.sleep(3)
        stop.set()
        loader.join(30)
        assert len(accepted) > 100
        _exactly_once(up, list(accepted), list(posted))
        assert "log_resets" in json.loads(http_get(up.url("/readyz"))[1]) and json.loads(
            http_get(up.url("/readyz"))[1])["log_resets"]
        # The compacted consents topic holds every subject's current state again.
        subjects = {r[0] for r in up.sql("SELECT subject_id FROM consent_current")}
        info = up.stack()
        assert info is not None
        last = _last_by_key(info["kafka_bootstrap"], "lifecycle.consents")
        states = {k.decode(): Codec().decode(v, topic="consents").value for k, v in last.items() if v is not None}
        assert subjects <= set(states)
        assert all(any(p["purpose"] == "analytics" and p["granted"] for p in states[s]["purposes"]) for s in subjects)
    finally:
        stop.set()
        up.stop()


def test_a_killed_connector_is_restarted_and_the_cli_finds_the_stack(tmp_path):
    up = Up(tmp_path)
    try:
        up.start()
        os.kill(up.child_pid("files"), signal.SIGKILL)
        wait_for(lambda: "the connector files restarted" in up.log.read_text(), deadline_s=30,
                 what="the files connector restarted")
        up.post([{"event_id": str(uuid.uuid4()), "event_type": "account.registered", "occurred_at": T0,
                  "account_id": acc, "visitor_id": None, "source": "durable-test", "email": f"{acc}@example.test",
                  "first_name": "D", "last_name": "U", "phone": None} for acc in ("acc-cli-closed", "acc-cli-live")])
        up.post([{"event_id": str(uuid.uuid4()), "event_type": "account.closed", "occurred_at": T0 + 60_000,
                  "account_id": "acc-cli-closed", "visitor_id": None, "source": "durable-test"}])

        def complete() -> bool:
            done = up.cli("erasure", "status", "acc-cli-closed")  # no DSN, no bootstrap: stack.json
            return done.returncode == 0 and json.loads(done.stdout)["erasures"][0]["state"] == "complete"

        wait_for(complete, deadline_s=90, what="the erasure, through the restarted connector")
        exported = up.cli("export", "acc-cli-live")
        assert exported.returncode == 0, exported.stderr
        assert json.loads(exported.stdout)["profile"][0]["account_id"] == "acc-cli-live"
        up.signal(signal.SIGINT)

        stopped = up.cli("erasure", "status", "acc-cli-closed")  # the stack is stopped now
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout)["erasures"][0]["state"] == "complete"
        assert "the stack is stopped" in stopped.stderr
        exported = up.cli("export", "acc-cli-live")
        assert exported.returncode == 0 and json.loads(exported.stdout)["profile"][0]["account_id"] == "acc-cli-live"
        assert up.cli("dlq", "list").returncode == 2  # dead letters live on the broker: says so
    finally:
        up.stop()
