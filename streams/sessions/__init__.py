"""Session records: who logged in, from where, the files sent (docs/processors.md)."""

from lifecycle.streams.runtime.feature import Feature
from lifecycle.streams.sessions.processor import FILES_ON_TOPIC, SessionsProcessor

__all__ = ["FEATURE", "FILES_ON_TOPIC", "SessionsProcessor"]

FEATURE = Feature("sessions", processors=(SessionsProcessor(),))
