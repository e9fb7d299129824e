"""Start what the configuration does not point at, and stop all of it, whatever happens.

`Stack` owns the embedded broker and PostgreSQL plus any child process registered with it
(the workers of `up`). Its ledger (``<state>/run/ledger.json``) lets the next start replace what
a crashed run left behind.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from lifecycle.core.config import Settings
from lifecycle.core.errors import StackError
from lifecycle.embedded.broker import EmbeddedBroker
from lifecycle.embedded.postgres import EmbeddedPostgres
from lifecycle.embedded.process import Ledger, stop_all
from lifecycle.embedded.redis import EmbeddedRedis, redis_binary

__all__ = ["Stack", "StackInfo"]


@dataclasses.dataclass(frozen=True)
class StackInfo:
    """Where the servers are, and which of them this run started."""

    settings: Settings
    embedded_broker: bool
    embedded_postgres: bool
    embedded_redis: bool = False


class Stack:
    """Context manager: ``with Stack(settings) as info: ...``; everything stops on exit."""

    def __init__(self, settings: Settings, *, say: Callable[[str], None] = lambda _: None, with_redis: bool = True):
        self.settings = settings
        self.say = say
        self.with_redis = with_redis
        self.run_dir = settings.state_dir / "run"
        self.logs = settings.state_dir / "logs"
        self.ledger = Ledger(self.run_dir / "ledger.json")
        self.broker: EmbeddedBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.children: list[tuple[subprocess.Popen[Any], int]] = []

    def _record(self) -> None:
        entries = []
        for server in (self.broker, self.postgres, self.redis):
            if server is not None and server.proc is not None:
                entries.append(
                    {"pid": server.proc.pid, "cmd": " ".join(server.argv()[:2]), "stop_signal": int(server.stop_signal)}
                )
        for proc, sig in self.children:
            args = proc.args if isinstance(proc.args, (list, tuple)) else [proc.args]
            entries.append({"pid": proc.pid, "cmd": " ".join(map(str, args[:2])), "stop_signal": sig})
        self.ledger.write({"owner": os.getpid(), "children": entries})

    def start(self) -> StackInfo:
        try:
            stopped = self.ledger.reap_leftovers()
        except RuntimeError as exc:
            raise StackError(str(exc)) from None
        if stopped:
            self.say(f"stopped {len(stopped)} process(es) left by a run that died")
        settings = self.settings
        try:
            bootstrap = settings.kafka_bootstrap
            if bootstrap is None:
                self.broker = EmbeddedBroker(self.logs / "broker.log")
                self.broker.start()
                self._record()
                bootstrap = self.broker.bootstrap
                self.say(f"embedded broker on {bootstrap} (log: {self.broker.log_path})")
            dsn = settings.postgres_dsn
            if dsn is None:
                self.postgres = EmbeddedPostgres(
                    settings.state_dir / "pgdata", self.logs / "postgres.log", fast=settings.embedded_pg_fast
                )
                self.postgres.start()
                self._record()
                dsn = self.postgres.dsn()
                self.say(f"embedded PostgreSQL on 127.0.0.1:{self.postgres.port} (log: {self.postgres.log_path})")
            redis_url = settings.redis_url
            if redis_url is None and self.with_redis and redis_binary():
                self.redis = EmbeddedRedis(self.logs / "redis.log")
                self.redis.start()
                self._record()
                redis_url = self.redis.url
                self.say(f"embedded Redis on 127.0.0.1:{self.redis.port}")
        except BaseException:
            self.stop()
            raise
        self.info = StackInfo(
            settings=settings.with_servers(kafka_bootstrap=bootstrap, postgres_dsn=dsn, redis_url=redis_url),
            embedded_broker=self.broker is not None,
            embedded_postgres=self.postgres is not None,
            embedded_redis=self.redis is not None,
        )
        return self.info

    def adopt(self, proc: subprocess.Popen[Any], stop_signal: int = signal.SIGTERM) -> None:
        """Register a child (a worker) to be stopped with the stack and listed in the ledger."""
        self.children.append((proc, stop_signal))
        self._record()

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        """Drop a child that has exited (a supervisor replaces it)."""
        self.children = [(p, s) for p, s in self.children if p is not proc]
        self._record()

    def broker_exited(self) -> bool:
        return self.broker is not None and self.broker.proc is not None and self.broker.proc.poll() is not None

    def restart_broker(self) -> None:
        """Start the embedded broker again on its port (its log, in memory, is gone)."""
        assert self.broker is not None
        self.broker.stop()
        self.broker.start()
        self._record()

    def stop(self) -> None:
        # Workers and connectors first (together), so they never see their broker or database
        # vanish under them.
        stop_all(self.children, timeout_s=15)
        self.children.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        self.ledger.clear()

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

