"""The downstream store protocol: what a store must do to take part in erasure.

A store is one folder under connectors/ with a ``Sink``: ``erase(orders)`` deletes everything the
store holds for each order's account and returns one ``Outcome`` per order, after its deletes
have committed; ``runner.run_connector`` does the rest (consumer group, batching, acks after the
commit, retries, offsets).
"""

from connectors.base.sink import ErasureOrder, Outcome, Sink, TransientStoreError
from connectors.base.runner import run_connector

__all__ = ["ErasureOrder", "Outcome", "Sink", "TransientStoreError", "run_connector"]
