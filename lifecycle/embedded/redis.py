"""A private Redis for the Redis store, when ``redis-server`` is installed and no
``LIFECYCLE_REDIS_URL`` is given. Redis ships in no wheel, so without the binary the Redis store
is simply not registered (docs/erasure.md)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import IO, Any

from lifecycle.embedded.process import free_port, spawn, stop_process, wait_for_port
from lifecycle.errors import StackError

__all__ = ["EmbeddedRedis", "redis_binary"]


def redis_binary() -> str | None:
    return shutil.which("redis-server")


class EmbeddedRedis:
    stop_signal = signal.SIGTERM

    def __init__(self, log_path: Path, port: int | None = None):
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[Any] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        binary = redis_binary()
        if binary is None:
            raise StackError("redis-server is not installed")
        return [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--protected-mode", "yes"]

    def start(self, deadline_s: float = 15) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = spawn(self.argv(), log=self._log, death_signal=self.stop_signal)
        if not wait_for_port(self.port, deadline_s, self.proc):
            self.stop()
            raise StackError(f"the embedded Redis did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, self.stop_signal, timeout_s=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
