"""Running the pipeline in the foreground: the stack, the topics, the worker processes.

`up` and `demo` share this. Workers and connectors run as child processes (``lifecycle worker``,
``lifecycle connector NAME``), so one that crashes is restarted without taking the stack down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lifecycle.core.config import Settings
from lifecycle.core.errors import StackError
from lifecycle.embedded import Stack
from lifecycle.embedded.process import free_port, spawn, stop_all
from lifecycle.store_registry import shipped
from lifecycle.streams.http.auth import init_tokens_file, load_tokens
from lifecycle.topics import apply_topics, load_spec

__all__ = ["running_pipeline", "supervised_pipeline", "Supervisor", "http_get", "wait_ready", "stack_file"]


def http_get(url: str, timeout_s: float = 2.0, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(
    settings: Settings, proc: subprocess.Popen[Any], deadline_s: float, say: Callable[[str], None]
) -> None:
    url = f"http://{settings.http_host}:{settings.http_port}/readyz"
    start = time.monotonic()
    last_note = start
    while time.monotonic() - start < deadline_s:
        if proc.poll() is not None:
            raise StackError(f"the worker exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError):
            status, _ = http_get(url, timeout_s=1)
            if status == 200:
                say(f"worker ready after {time.monotonic() - start:.1f} s")
                return
        if time.monotonic() - last_note > 5:
            say(f"  waiting for the worker to join its consumer group ({time.monotonic() - start:.0f} s)")
            last_note = time.monotonic()
        time.sleep(0.25)
    raise StackError(f"the worker was not ready within {deadline_s:.0f} s")


def _sigterm_as_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


RESTART_LIMIT = 5  # crashes of one child within RESTART_WINDOW_S: it is reported failing
RESTART_WINDOW_S = 60.0
FAILING_RETRY_S = 60.0  # a failing child is still started again, this often
DRAIN_DEADLINE_S = 30.0


@dataclasses.dataclass
class _Child:
    """A worker or connector that `up` keeps running."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[Any] | None = None
    crashes: list[float] = dataclasses.field(default_factory=list)
    restarts: int = 0
    due_at: float | None = None  # when a crashed child is started again
    failing: bool = False  # crashed RESTART_LIMIT times within RESTART_WINDOW_S; reported until it stays up
    started_at: float = 0.0

    def spawn(self, stack: Stack) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = spawn(self.argv, log=log, env=self.env)
        stack.adopt(self.proc)
        self.due_at = None
        self.started_at = time.monotonic()


class Supervisor:
    """The processes of `up` and `demo` on a started stack: starts them, restarts a worker or
    connector that exits (backoff 1, 2, 4 ... 30 s), restarts an embedded broker that exits, and
    drains on stop. A child that crashes RESTART_LIMIT times within RESTART_WINDOW_S is reported
    failing (``<state>/run/children.json``: the worker's /readyz and the metric
    ``lifecycle_stack_child_failing`` read it; an alert fires on it) and started again every
    FAILING_RETRY_S, while the rest of the stack keeps serving: one failing connector never
    stops them all (issue 26)."""

    def __init__(self, stack: Stack, live: Settings, say: Callable[[str], None]):
        self.stack, self.live, self.say = stack, live, say
        # The console checks certificates against the published proof key, never the private one.
        env = {**os.environ, **live.to_env(), "LIFECYCLE_PROOF_TRUST_FILE": str(publish_proof_key(live))}
        logs = live.state_dir / "logs"
        self.worker = _Child("worker", [sys.executable, "-m", "lifecycle", "worker"], env, logs / "worker.log")
        # Only the stores shipped here have a connector to start; a store of another team runs
        # where its owner runs it, and the pipeline waits for its answers (lifecycle/store_registry.py).
        self.ports = {store: free_port() for store in live.erasure_stores if shipped(store)}
        self.connectors = [
            _Child(f"connector {store}", [sys.executable, "-m", "lifecycle", "connector", store],
                   {**os.environ, **dataclasses.replace(live, metrics_port=port).to_env()},
                   logs / f"connector-{store}.log")
            for store, port in self.ports.items()]

    @property
    def children(self) -> list[_Child]:
        return [self.worker, *self.connectors]

    def start(self) -> None:
        write_children_file(self.live, [c.name for c in self.children if c.failing])
        self.worker.spawn(self.stack)
        assert self.worker.proc is not None
        self.say(f"worker started (pid {self.worker.proc.pid}, log: {self.worker.log_path}); "
                 f"http on {self.live.http_host}:{self.live.http_port}")
        wait_ready(self.live, self.worker.proc, deadline_s=120, say=self.say)
        for child in self.connectors:
            child.spawn(self.stack)
        self.say(f"connectors started: {', '.join(f'{s} (metrics :{p})' for s, p in self.ports.items())}")
        self._say_foreign_stores()

    def _say_foreign_stores(self) -> None:
        """The stores `up` does not start, and whether each can answer yet (a key registered)."""
        import psycopg

        from lifecycle.store_registry import listing

        try:
            with psycopg.connect(self.live.postgres_dsn or "", autocommit=True, connect_timeout=10) as conn:
                rows = [r for r in listing(conn) if not r.shipped and r.waited_for]
        except psycopg.Error as exc:
            self.say(f"stores of other teams: not listed (PostgreSQL: {type(exc).__name__})")
            return
        for r in rows:
            self.say(f"store {r.store}: run by its owner, not by `up`; erasures wait for its answers"
                     + ("" if r.signing_key else f" (no key yet: `lifecycle store add {r.store} --out FILE`)"))

    def watch(self) -> None:
        """One round of supervision."""
        if self.stack.broker_exited():
            self._restart_broker()
            return
        now = time.monotonic()
        changed = False
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                self.stack.forget(child.proc)
                child.proc = None
                child.crashes = [t for t in child.crashes if now - t < RESTART_WINDOW_S] + [now]
                if len(child.crashes) >= RESTART_LIMIT and not child.failing:
                    child.failing = changed = True
                    self.say(f"the {child.name} exited {len(child.crashes)} times within {RESTART_WINDOW_S:.0f} s "
                             f"(last exit code {code}): reported failing; the rest of the stack keeps serving, and "
                             f"it is started again every {FAILING_RETRY_S:.0f} s (log: {child.log_path})")
                delay = FAILING_RETRY_S if child.failing else min(2.0 ** (len(child.crashes) - 1), 30.0)
                child.due_at = now + delay
                if not child.failing:
                    self.say(f"the {child.name} exited with code {code}; restarting in {delay:.0f} s "
                             f"(log: {child.log_path})")
            elif child.failing and child.proc is not None and now - child.started_at > RESTART_WINDOW_S:
                child.failing, child.crashes, changed = False, [], True
                self.say(f"the {child.name} has stayed up {RESTART_WINDOW_S:.0f} s: no longer failing")
            if child.proc is None and child.due_at is not None and now >= child.due_at:
                child.restarts += 1
                child.spawn(self.stack)
                if not child.failing:
                    self.say(f"the {child.name} restarted (restart {child.restarts})")
        if changed:
            write_children_file(self.live, [c.name for c in self.children if c.failing])

    def _restart_broker(self) -> None:
        """The embedded broker's log lived in its memory: start it again on its port, declare the
        topics before any client can auto-create them, then start the children again. The intake
        detects the new log, the journal re-sends what was accepted and not applied, and the state
        topics are republished (docs/operations.md)."""
        self.say("the embedded broker exited; stopping the workers and connectors to restart it")
        stop_all([(c.proc, signal.SIGTERM) for c in self.children if c.proc is not None], timeout_s=15)
        for child in self.children:
            if child.proc is not None:
                self.stack.forget(child.proc)
                child.proc = None
        self.stack.restart_broker()
        report = apply_topics(self.live, load_spec(self.live.topic_spec))
        self.say(f"embedded broker restarted on {self.live.kafka_bootstrap}; {len(report.created)} topics created")
        self.start()

    def drain(self, deadline_s: float = DRAIN_DEADLINE_S) -> None:
        """Stop taking HTTP events, then wait (bounded) until every accepted event is applied and
        every output record published, saying how many are left."""
        flag = self.live.state_dir / "run" / "draining"
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()
        if self.worker.proc is None or self.worker.proc.poll() is not None:
            self.say("draining skipped: the worker is not running (accepted events wait in the journal)")
            return
        import psycopg

        end = time.monotonic() + deadline_s
        last_note = 0.0
        try:
            with psycopg.connect(self.live.postgres_dsn or "", autocommit=True, connect_timeout=5) as conn:
                while True:
                    row = conn.execute("SELECT (SELECT count(*) FROM ingest_journal), "
                                       "(SELECT count(*) FROM outbox)").fetchone()
                    journal, outbox = (int(row[0]), int(row[1])) if row else (0, 0)
                    if journal == 0 and outbox == 0:
                        self.say("drained: every accepted event applied, every output record published")
                        return
                    if time.monotonic() >= end:
                        self.say(f"drain deadline reached: {journal} accepted event(s) wait in the ingest journal "
                                 f"and {outbox} output record(s) in the outbox, both kept in PostgreSQL for "
                                 "the next start")
                        return
                    if time.monotonic() - last_note > 2:
                        self.say(f"draining: {journal} accepted event(s) to apply, "
                                 f"{outbox} output record(s) to publish")
                        last_note = time.monotonic()
                    time.sleep(0.2)
        except psycopg.Error as exc:
            self.say(f"draining skipped: PostgreSQL unreachable ({type(exc).__name__})")


@contextlib.contextmanager
def supervised_pipeline(settings: Settings, say: Callable[[str], None]) -> Iterator[Supervisor]:
    """Start the stack, apply the topics, start the worker (wait until ready) and the connectors.

    On exit (also Ctrl-C and SIGTERM): drain, then stop everything.
    """
    previous = signal.signal(signal.SIGTERM, _sigterm_as_exit)
    stack = Stack(settings, say=say)
    supervisor: Supervisor | None = None
    try:
        info = stack.start()
        live = info.settings
        if not live.redis_url and "redis" in live.erasure_stores:
            live = dataclasses.replace(live, erasure_stores=tuple(x for x in live.erasure_stores if x != "redis"))
            say("no redis-server and no LIFECYCLE_REDIS_URL: the redis store is not registered")
        if not (live.http_token or live.read_token or live.keys_token or live.http_tokens_file):
            # No token configured: one per scope, generated into the state folder, so that the
            # HTTP API is usable and still closed to whoever merely reaches the port.
            live = dataclasses.replace(live, http_tokens_file=live.state_dir / "secrets" / "http-tokens")
            init_tokens_file(live)
            say(f"HTTP bearer tokens (ingest, read, keys): {live.http_tokens_file}")
        (live.state_dir / "run" / "draining").unlink(missing_ok=True)
        report = apply_topics(live, load_spec(live.topic_spec))
        say(f"topics: {len(report.created)} created, {len(report.existing)} present, {len(report.drift)} drift")
        for line in report.drift:
            say(f"  drift: {line}")
        supervisor = Supervisor(stack, live, say)
        supervisor.start()
        say(console_hint(live))
        write_stack_file(live)
        targets = write_scrape_targets(live, supervisor.ports)
        say(f"Prometheus targets (file_sd): {targets}")
        try:
            yield supervisor
        except (KeyboardInterrupt, SystemExit):
            say("stopping: draining first (Ctrl-C again to stop at once)")
            supervisor.drain()
            raise
        else:
            supervisor.drain()
    finally:
        say("stopping")
        remove_stack_file(settings)
        stack.stop()
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def running_pipeline(settings: Settings, say: Callable[[str], None]) -> Iterator[tuple[Settings, Stack]]:
    """``supervised_pipeline`` for callers that only need the servers (the demo, benchmarks)."""
    with supervised_pipeline(settings, say) as supervisor:
        yield supervisor.live, supervisor.stack


def publish_proof_key(live: Settings) -> Path:
    """``<state>/run/proof.pub``: the public half of the proof key (made on first use), what the
    console verifies certificates against; an auditor gets it from `lifecycle proof key --raw`."""
    from lifecycle import proofs

    path = live.state_dir / "run" / "proof.pub"
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get("LIFECYCLE_PROOF_TRUST_FILE"):
        return Path(os.environ["LIFECYCLE_PROOF_TRUST_FILE"])
    path.write_text(proofs.public_key_text(proofs.load_signing_key(live))["public_key"] + "\n")
    return path


def console_hint(live: Settings) -> str:
    """Where the console is and a token to sign in with (a read token: it only reads)."""
    token = next((t.decode() for t, scopes in load_tokens(live).entries if "read" in scopes), None)
    where = f"http://{live.http_host}:{live.http_port}/console"
    return f"console: {where} (sign in with the read token {token})" if token else \
        f"console: {where} (sign in with a token of scope read)"


def children_file(settings: Settings) -> Path:
    return settings.state_dir / "run" / "children.json"


def write_children_file(settings: Settings, failing: list[str]) -> None:
    """The children `up` reports failing, for the worker's /readyz and metrics (names, no data)."""
    path = children_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"failing": failing}))
    tmp.replace(path)


def stack_file(settings: Settings) -> Path:
    return settings.state_dir / "run" / "stack.json"


def write_stack_file(live: Settings) -> None:
    """Where the running stack's servers are, for the commands that read its state
    (lifecycle/locate.py). The DSN carries the embedded PostgreSQL's password: the file is 0600."""
    path = stack_file(live)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"owner": os.getpid(), "kafka_bootstrap": live.kafka_bootstrap, "postgres_dsn": live.postgres_dsn,
                   "redis_url": live.redis_url, "http": f"{live.http_host}:{live.http_port}"}, out, indent=2)
    os.replace(tmp, path)


def remove_stack_file(settings: Settings) -> None:
    stack_file(settings).unlink(missing_ok=True)


def write_scrape_targets(live: Settings, connector_ports: dict[str, int]) -> Path:
    """Every /metrics endpoint of this run, in Prometheus' file_sd format, for a local Prometheus
    (`file_sd_configs`; see docs/observability.md)."""
    host = live.http_host
    groups = [{"targets": [f"{host}:{live.http_port}"], "labels": {"job": "lifecycle-worker"}},
              {"targets": [f"{host}:{p}" for p in connector_ports.values()], "labels": {"job": "lifecycle-connector"}}]
    path = live.state_dir / "scrape-targets.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=2))
    os.replace(tmp, path)
    return path



