"""The project's exception hierarchy.

Errors are told apart by class, never by message text. Messages name fields, codes and
counts, never the personal data inside a record.
"""

from __future__ import annotations

__all__ = [
    "LifecycleError",
    "ConfigError",
    "StackError",
    "TopicSpecError",
    "PolicyError",
]


class LifecycleError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(LifecycleError):
    """A setting is missing or malformed."""


class StackError(LifecycleError):
    """An embedded server could not be started, reached or stopped."""


class TopicSpecError(LifecycleError):
    """The topic spec file is invalid."""


class PolicyError(LifecycleError):
    """The retention policy file is invalid; the message names the line."""
