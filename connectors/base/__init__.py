"""The downstream store protocol: what a store must do to take part in erasure.

A store is one folder under connectors/ with a ``Sink`` (a ``RetentionSink`` if it also keeps data
swept by time): ``erase(orders)`` deletes everything the store holds for each order's account and
returns one ``Outcome`` per order, after its deletes have committed; ``runner.run_connector`` does
the rest (consumer group, batching, acks after the commit, retries, offsets).
"""

from lifecycle.connectors.base.runner import run_connector
from lifecycle.connectors.base.sink import AckStatus, ErasureOrder, Outcome, RetentionSink, Sink, TransientStoreError

__all__ = ["AckStatus", "ErasureOrder", "Outcome", "RetentionSink", "Sink", "TransientStoreError", "run_connector"]
