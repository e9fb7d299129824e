"""Retention: sweeps ordered to every store as each window passes, and their answers
(docs/retention.md)."""

from lifecycle.streams.retention.sweeps import apply_retention_acks, retention_ack_problem, retention_tick, store_label
from lifecycle.streams.runtime.feature import AnswerKind, Feature, Tick

__all__ = ["FEATURE", "apply_retention_acks", "retention_ack_problem", "retention_tick", "store_label"]

FEATURE = Feature(
    "retention",
    answers=(AnswerKind("RetentionAck", "retention acks", retention_ack_problem,
                        lambda ack: ("retention", ack["order_id"]), apply_retention_acks),),
    ticks=(Tick("retention tick", lambda conn, ctx, now: retention_tick(conn, ctx, ctx.policy, now)),),
)
