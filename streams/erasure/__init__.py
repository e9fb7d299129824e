"""Erasure: opening at closure, orders to every store, their answers and verification, the clock
that re-issues them, and the restore guard (docs/erasure.md)."""

from lifecycle.streams.erasure.answers import ack_problem, apply_acks
from lifecycle.streams.erasure.ledger import erasure_status, publish_status
from lifecycle.streams.erasure.opening import open_erasures
from lifecycle.streams.erasure.restore_guard import replay_report, request_replay
from lifecycle.streams.erasure.tick import erasure_tick, reverify
from lifecycle.streams.erasure.views import PAGES
from lifecycle.streams.runtime.feature import AnswerKind, Feature, Tick

__all__ = ["FEATURE", "ack_problem", "apply_acks", "erasure_status", "erasure_tick", "open_erasures", "publish_status",
           "replay_report", "request_replay", "reverify"]

FEATURE = Feature(
    "erasure",
    answers=(AnswerKind("ErasureAck", "erasure acks", ack_problem,
                        lambda ack: ("erasure", ack["request_id"], ack.get("action") or "erase", ack.get("round") or 0),
                        apply_acks, receipt=True),),
    ticks=(Tick("erasure tick", erasure_tick),),
    pages=PAGES,
)
