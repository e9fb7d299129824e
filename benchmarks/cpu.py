"""CPU seconds of a benchmark's processes by role, read from /proc (Linux): the worker, the
connectors, PostgreSQL (postmaster and backends), the broker, and the benchmark's own process
(its producers and pollers), so that a figure can be printed with what it cost in every process."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CpuMeter"]

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process; OSError once it is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below ``root``."""
    parent: dict[int, int] = {}
    name: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                name[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                found[child] = name[child]
                frontier.append(child)
    return found


def role(cmdline: str) -> str:
    if "-m lifecycle worker" in cmdline:
        return "worker"
    if "-m lifecycle connector" in cmdline:
        return "connectors"
    if "postgres" in cmdline:
        return "postgresql"
    if "redis" in cmdline:
        return "redis"
    if "tansu" in cmdline:
        return "broker"
    return "other"


class CpuMeter:
    """CPU seconds each role used between the meter's creation and ``used()``. A process that
    starts in between counts from zero; one that ends in between is lost (PostgreSQL's backends
    serve connections that live through a measurement)."""

    def __init__(self) -> None:
        self.before = self._read()

    @staticmethod
    def _read() -> dict[int, tuple[str, float]]:
        out = {os.getpid(): ("benchmark", cpu_seconds(os.getpid()))}
        for pid, cmdline in _descendants(os.getpid()).items():
            try:
                out[pid] = (role(cmdline), cpu_seconds(pid))
            except OSError:
                continue
        return out

    def used(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid, (name, seconds) in self._read().items():
            totals[name] = totals.get(name, 0.0) + seconds - self.before.get(pid, (name, 0.0))[1]
        return totals
