"""Find live processes that belong to a run, by a marker in their command line or environment."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lifecycle.embedded.process import pid_alive


def processes_marked(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of live processes whose cmdline or environment contains ``marker``."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if (needle in cmdline or needle in environ) and pid_alive(int(entry.name)):
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def wait_until_gone(marker: str, deadline_s: float = 30) -> list[tuple[int, str]]:
    """Wait for every marked process to end; returns the survivors (empty when all are gone)."""
    end = time.monotonic() + deadline_s
    left = processes_marked(marker)
    while left and time.monotonic() < end:
        time.sleep(0.2)
        left = processes_marked(marker)
    return left
