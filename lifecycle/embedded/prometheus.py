"""Prometheus and promtool for tests and the dashboard preview, never for production (Compose
runs the official image). Prometheus ships in no wheel: the binaries are taken from PATH, else
from a cached copy of Debian's `prometheus` package, else fetched once with `apt-get download`
and unpacked into the cache (no root, nothing installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from lifecycle.core.errors import StackError
from lifecycle.embedded.process import ServerProcess, wait_for_port

__all__ = ["prometheus_binary", "EmbeddedPrometheus", "TOOLS_DIR"]

TOOLS_DIR = Path(os.environ.get("LIFECYCLE_TOOLS_DIR", Path.home() / ".cache" / "lifecycle-tools"))


def prometheus_binary(name: str) -> Path:
    """``prometheus`` or ``promtool``; StackError (with the reason) when it cannot be had."""
    found = shutil.which(name)
    if found:
        return Path(found)
    unpacked = TOOLS_DIR / "prometheus"
    binary = unpacked / "usr" / "bin" / name
    if binary.exists():
        return binary
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise StackError(f"{name} not found, and no apt-get/dpkg-deb to fetch Debian's prometheus package")
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TOOLS_DIR) as tmp:
        fetched = subprocess.run(["apt-get", "download", "prometheus"], cwd=tmp, capture_output=True, text=True,
                                 timeout=300)
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if fetched.returncode != 0 or not debs:
            raise StackError(f"{name} not found, and `apt-get download prometheus` failed: "
                             f"{fetched.stderr.strip()[-200:]}")
        staging = Path(tmp) / "unpacked"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True, timeout=120)
        try:
            os.replace(staging, unpacked)  # another run may have won the race: theirs is as good
        except OSError:
            pass
    return binary


class EmbeddedPrometheus(ServerProcess):
    """One Prometheus on a free loopback port with the given configuration file."""

    def __init__(self, config: Path, data_dir: Path, log_path: Path):
        super().__init__(log_path)
        self.config, self.data_dir = config, data_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [str(prometheus_binary("prometheus")), f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data_dir}", f"--web.listen-address=127.0.0.1:{self.port}"]

    def start(self, deadline_s: float = 30) -> None:
        self._spawn()
        if not wait_for_port(self.port, deadline_s, self.proc):
            self.stop()
            raise StackError(f"Prometheus did not start; see {self.log_path}")
