"""Fixtures for the real servers: one embedded broker and PostgreSQL per test session (or the
ones named by LIFECYCLE_KAFKA_BOOTSTRAP / LIFECYCLE_POSTGRES_DSN), a fresh topic prefix per
test, and a worker process that is always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest

from lifecycle.core.config import Settings
from lifecycle.embedded import Stack
from lifecycle.embedded.process import free_port, spawn, stop_process
from lifecycle.embedded.redis import redis_binary
from lifecycle.supervisor import http_get
from lifecycle.topics import apply_topics, load_spec


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a running broker, PostgreSQL and Redis for the whole session."""
    state = tmp_path_factory.mktemp("stack")
    base = Settings.from_env({**os.environ, "LIFECYCLE_STATE_DIR": str(state), "LIFECYCLE_EMBEDDED_PG_FAST": "true"})
    if not base.redis_url and redis_binary() is None and os.environ.get("CI"):
        pytest.fail("CI needs redis-server (or LIFECYCLE_REDIS_URL) for the Redis store's tests")
    with Stack(base) as info:
        yield info.settings


def _own_database(dsn: str, name: str) -> str:
    """A database of the test's own on the session server: tables, clock and outbox apart."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


@pytest.fixture
def settings(servers: Settings, tmp_path: Path) -> Settings:
    """Session servers; a topic prefix, a database and an HTTP port of this test's own; every
    topic applied; the event-time clock, so a test moves time by emitting later events."""
    import dataclasses

    tag = uuid.uuid4().hex[:10]
    s = dataclasses.replace(
        servers,
        topic_prefix=f"t{tag}.",
        postgres_dsn=_own_database(servers.postgres_dsn or "", f"t{tag}"),
        postgres_role_prefix=f"t{tag}_",  # roles are the cluster's: each test's database its own
        state_dir=tmp_path / "state",
        http_port=free_port(),
        http_token=f"token-{tag}",
        keys_token=f"keys-{tag}",
        read_token=f"read-{tag}",
        clock="event",
        files_root=tmp_path / "files",
        erasure_stores=tuple(x for x in servers.erasure_stores if x != "redis" or servers.redis_url),
        erasure_retry_s=2,
        broker_session_timeout_s=3,  # a killed member leaves its group fast; heartbeats are every second
    )
    apply_topics(s, load_spec(s.topic_spec))
    return s


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ChildProcess:
    """A `lifecycle ...` child process: started, and always stopped."""

    def __init__(self, settings: Settings, log_path: Path, args: list[str], extra_env: dict[str, str] | None = None):
        self.settings = settings
        self.log_path = log_path
        self.args = args
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        port = self.extra_env.get("LIFECYCLE_METRICS_PORT")
        if port is not None and not _bindable(int(port)):
            # Started again after a while (a connector stopped for a minute): another test may have
            # picked the port meanwhile ("Address already in use", seen in a fault test), so a new one.
            self.extra_env["LIFECYCLE_METRICS_PORT"] = str(free_port())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = spawn(
                [sys.executable, "-m", "lifecycle", *self.args],
                log=log,
                env={**os.environ, **self.settings.to_env(), **self.extra_env},
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL, timeout_s=5)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, timeout_s=15)
            self.proc = None


class WorkerProcess(ChildProcess):
    """A `lifecycle worker` child: started, waited for until ready, and always stopped."""

    def __init__(self, settings: Settings, log_path: Path):
        super().__init__(settings, log_path, ["worker"])

    def start(self, deadline_s: float = 60) -> None:
        self.spawn()
        assert self.proc is not None
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"worker exited early; see {self.log_path}"
            try:
                if http_get(self.url("/readyz"), timeout_s=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready within {deadline_s} s; see {self.log_path}")

    def url(self, path: str) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}{path}"


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        w.start()
        yield w
    finally:
        w.stop()


@pytest.fixture
def connectors(settings: Settings, worker: WorkerProcess, tmp_path: Path) -> Iterator[dict[str, ChildProcess]]:
    """One connector process per registered store (after the worker, so the stores are registered),
    each serving its /metrics on a port of its own (``proc.extra_env["LIFECYCLE_METRICS_PORT"]``)."""
    procs = {name: ChildProcess(settings, tmp_path / f"connector-{name}.log", ["connector", name],
                                {"LIFECYCLE_METRICS_PORT": str(free_port())})
             for name in settings.erasure_stores}
    try:
        for proc in procs.values():
            proc.spawn()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()
