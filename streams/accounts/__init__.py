"""Accounts: profiles, links to visitors, closure (which opens the erasure) (docs/processors.md)."""

from lifecycle.streams.accounts.processor import AccountsProcessor, profile_records
from lifecycle.streams.runtime.feature import Feature

__all__ = ["FEATURE", "AccountsProcessor", "profile_records"]

FEATURE = Feature("accounts", processors=(AccountsProcessor(),))
