"""Access requests (GDPR Art. 15 and 20): opening, the stores' answers, the sealed archive and its
readable report, and deadline extensions of a request (Art. 12(3)) (docs/access.md)."""

from lifecycle.streams.access.extensions import MAX_MONTHS, ExtensionRefused, extend, extensions_of, notify_extensions
from lifecycle.streams.access.report import render_report
from lifecycle.streams.access.requests import (
    ARCHIVE_FORMAT,
    access_state,
    access_tick,
    answer_problem,
    apply_answers,
    forget_access,
    open_access,
)
from lifecycle.streams.access.views import PAGES
from lifecycle.streams.runtime.feature import AnswerKind, Feature, Tick

__all__ = ["FEATURE", "ARCHIVE_FORMAT", "MAX_MONTHS", "ExtensionRefused", "access_state", "access_tick",
           "answer_problem", "apply_answers", "extend", "extensions_of", "forget_access", "notify_extensions",
           "open_access", "render_report"]

FEATURE = Feature(
    "access",
    answers=(AnswerKind("AccessAnswer", "access answers", answer_problem,
                        lambda answer: ("access", answer["request_id"]), apply_answers),),
    ticks=(Tick("access tick", access_tick),
           Tick("extension notices", lambda conn, ctx, now: notify_extensions(conn, ctx))),
    pages=PAGES,
)
