"""One way to wait between retries, for every retry in the project: exponential from ``first_s``,
doubling up to ``max_s``, jittered (0.5x to 1.5x, so that workers retrying together spread out),
with an optional deadline after which the caller stops retrying and fails loudly."""

from __future__ import annotations

import random
import time

from lifecycle.core.errors import LifecycleError

__all__ = ["Backoff", "RetryDeadline"]


class RetryDeadline(LifecycleError):
    """Retried until the deadline, still failing."""


class Backoff:
    def __init__(self, first_s: float = 0.1, max_s: float = 5.0, deadline_s: float | None = None):
        self.first_s, self.max_s, self.deadline_s = first_s, max_s, deadline_s
        self.attempts = 0
        self._delay = first_s
        self._started = time.monotonic()

    def next_delay(self) -> float:
        """The pause before the next attempt. Raises RetryDeadline once the deadline has passed
        (None: retry for as long as it takes, for a caller whose batch must not be dropped)."""
        self.attempts += 1
        if self.deadline_s is not None and time.monotonic() - self._started >= self.deadline_s:
            raise RetryDeadline(f"still failing after {self.attempts - 1} retries in {self.deadline_s:.0f} s")
        delay = self._delay * (0.5 + random.random())
        self._delay = min(self._delay * 2, self.max_s)
        return delay
