"""The one clock every time-dependent rule asks. Never call time.time() in a processor.

``WallClock`` in production, so a subject who goes quiet still expires. ``EventTimeClock``
(``LIFECYCLE_CLOCK=event``) for tests and the demo: now is the latest event time the worker has
seen, so emitting an event dated 13 months later moves time by 13 months in milliseconds.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from lifecycle.core.config import Settings

__all__ = ["Clock", "WallClock", "EventTimeClock", "SimulatedClock", "make_clock", "latest_plausible"]


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def observe(self, event_time_ms: int) -> None: ...


class WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def observe(self, event_time_ms: int) -> None:
        """The wall clock ignores event time."""


class EventTimeClock:
    """Now is the latest event time observed (it never goes back)."""

    def __init__(self, start_ms: int = 0):
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def observe(self, event_time_ms: int) -> None:
        with self._lock:
            if event_time_ms > self._now:
                self._now = event_time_ms


class SimulatedClock(EventTimeClock):
    """A clock moved by hand (unit tests)."""

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now += ms
            return self._now


def make_clock(kind: str) -> Clock:
    return EventTimeClock() if kind == "event" else WallClock()


def latest_plausible(settings: Settings, clock: Clock) -> int | None:
    """The latest ``occurred_at`` accepted now: the wall clock plus the allowed skew. On the
    event-time clock (tests, the demo) events are what moves time, so there is no bound."""
    return clock.now_ms() + settings.max_future_s * 1000 if settings.clock == "wall" else None
