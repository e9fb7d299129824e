"""The embedded stack: a Kafka-protocol broker and a PostgreSQL that ship inside wheels.

Used when ``LIFECYCLE_KAFKA_BOOTSTRAP`` / ``LIFECYCLE_POSTGRES_DSN`` are unset, by ``up``,
``demo`` and the test harness.
"""

from lifecycle.embedded.stack import Stack, StackInfo

__all__ = ["Stack", "StackInfo"]
