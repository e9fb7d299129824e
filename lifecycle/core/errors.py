"""The project's exception hierarchy, and the one place that decides what is transient.

Errors are told apart by class, never by message text. Messages name fields, codes and
counts, never the personal data inside a record. Two kinds matter to every loop: a transient
error (a server unreachable or busy) is waited out and the same input tried again, never dropped;
any other error is the input's, and that input alone goes to the dead letters
(docs/operations.md, "What survives a crash").
"""

from __future__ import annotations

import psycopg

__all__ = [
    "LifecycleError",
    "TransientError",
    "is_transient",
    "ConfigError",
    "StackError",
    "TopicSpecError",
    "PolicyError",
]


class LifecycleError(Exception):
    """Root of every error this project raises on purpose."""


class TransientError(LifecycleError):
    """Trying again later can succeed: a server (a store, the schema registry) unreachable or busy."""


# Serialization failure, deadlock, lock not granted in time, server shutting down or starting,
# too many connections: the same statement can succeed later. A statement cancelled at its timeout
# (57014) is not among them: its batch is retried event by event instead.
_RETRIED_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later can succeed."""
    if isinstance(exc, (TransientError, OSError, psycopg.InterfaceError)):
        return True
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:  # no answer from the server: the connection itself failed
            return isinstance(exc, psycopg.OperationalError)
        return state.startswith("08") or state in _RETRIED_SQLSTATES
    return False


class ConfigError(LifecycleError):
    """A setting is missing or malformed."""


class StackError(LifecycleError):
    """An embedded server could not be started, reached or stopped."""


class TopicSpecError(LifecycleError):
    """The topic spec file is invalid."""


class PolicyError(LifecycleError):
    """The retention policy file is invalid; the message names the line."""
