"""External programs some tests need that ship in no wheel: Prometheus' `prometheus` and
`promtool` (Debian package `prometheus`). Found on PATH, else taken from a cached copy of the
Debian package, else fetched once with `apt-get download` and unpacked (no root, no install);
where none of that is possible the test is skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

__all__ = ["prometheus_tool"]

CACHE = Path(os.environ.get("LIFECYCLE_TOOLS_DIR", Path.home() / ".cache" / "lifecycle-tools"))


def prometheus_tool(name: str) -> Path:
    found = shutil.which(name)
    if found:
        return Path(found)
    unpacked = CACHE / "prometheus"
    binary = unpacked / "usr" / "bin" / name
    if binary.exists():
        return binary
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        pytest.skip(f"{name} not found and no apt-get/dpkg-deb to fetch Debian's prometheus package")
    with tempfile.TemporaryDirectory() as tmp:
        fetched = subprocess.run(["apt-get", "download", "prometheus"], cwd=tmp, capture_output=True, text=True,
                                 timeout=300)
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if fetched.returncode != 0 or not debs:
            pytest.skip(f"{name} not found and `apt-get download prometheus` failed: {fetched.stderr.strip()[-200:]}")
        staging = Path(tempfile.mkdtemp(dir=CACHE.parent if CACHE.parent.exists() else None))
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True, timeout=120)
        CACHE.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, unpacked)  # another run may have won the race: theirs is as good
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return binary
