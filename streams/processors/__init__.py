"""One processor per input topic. Each applies a batch of new (deduplicated) events inside one
PostgreSQL transaction, with set-based or pipelined statements, and queues its output records
in the outbox of the same transaction."""

from lifecycle.streams.processors.accounts import AccountsProcessor
from lifecycle.streams.processors.base import Context, Processor
from lifecycle.streams.processors.consent import ConsentProcessor
from lifecycle.streams.processors.sessions import SessionsProcessor
from lifecycle.streams.processors.traffic import TrafficProcessor

__all__ = ["AccountsProcessor", "ConsentProcessor", "Context", "Processor", "SessionsProcessor",
           "TrafficProcessor", "all_processors"]


def all_processors() -> list[Processor]:
    return [AccountsProcessor(), SessionsProcessor(), ConsentProcessor(), TrafficProcessor()]
