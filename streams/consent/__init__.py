"""Consent: current state per purpose, the cookie lapse, Global Privacy Control, receipts, and who
may be mailed (docs/consent.md, docs/processors.md)."""

from lifecycle.streams.consent.mail import MailKind, may_send
from lifecycle.streams.consent.processor import COOKIE_LIFETIME_MONTHS, ConsentProcessor, consent_state, publish_states
from lifecycle.streams.consent.receipts import ASK_AGAIN_MONTHS, FORMAT, consent_receipts
from lifecycle.streams.consent.views import PAGES
from lifecycle.streams.runtime.feature import Feature

__all__ = ["FEATURE", "ASK_AGAIN_MONTHS", "COOKIE_LIFETIME_MONTHS", "ConsentProcessor", "FORMAT", "MailKind",
           "consent_receipts", "consent_state", "may_send", "publish_states"]

FEATURE = Feature("consent", processors=(ConsentProcessor(),), pages=PAGES)
