"""The one clock every time-dependent rule asks. Never call time.time() in a processor.

Production uses the wall clock; tests and the demo use ``SimulatedClock`` and move it by months
in milliseconds.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "WallClock", "SimulatedClock", "DAY_MS"]

DAY_MS = 86_400_000


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class SimulatedClock:
    """A clock that only moves when told to."""

    def __init__(self, start_ms: int):
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now += ms
            return self._now
