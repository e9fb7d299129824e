"""A private Redis for the Redis store, when ``redis-server`` is installed and no
``LIFECYCLE_REDIS_URL`` is given. Redis ships in no wheel, so without the binary the Redis store
is simply not registered (docs/erasure.md)."""

from __future__ import annotations

import shutil

from lifecycle.core.errors import StackError
from lifecycle.embedded.process import ServerProcess, wait_for_port

__all__ = ["EmbeddedRedis", "redis_binary"]


def redis_binary() -> str | None:
    return shutil.which("redis-server")


class EmbeddedRedis(ServerProcess):
    """One redis-server on a free loopback port, nothing kept on disk."""

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
        self._spawn()
        if not wait_for_port(self.port, deadline_s, self.proc):
            self.stop()
            raise StackError(f"the embedded Redis did not start; see {self.log_path}")
