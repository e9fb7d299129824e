"""Orders by keyed hash alone, matched against the ids a store holds (docs/erasure.md)."""

from __future__ import annotations

import dataclasses

from lifecycle.connectors.base.sink import AckStatus, ErasureOrder, Outcome, Sink
from lifecycle.core.config import Settings
from lifecycle.core.keys import Keyring, load_keyring

__all__ = ["Resolver"]


class Resolver:
    """Orders that name their subjects by keyed hashes alone (the erasure completed before, and the
    pipeline forgot the ids) are matched against the ids the store holds, hashed with the
    pipeline's keyring; an order that matches nothing is answered without asking the store."""

    def __init__(self, sink: Sink, settings: Settings):
        self.sink, self.settings = sink, settings
        self._keys: Keyring | None = None

    def resolve(self, orders: list[ErasureOrder]) -> tuple[list[ErasureOrder], list[ErasureOrder]]:
        """(orders to hand to the store, orders that match nothing there)."""
        hashed = [o for o in orders if o.by_hash_only]
        if not hashed:
            return orders, []
        if self._keys is None:
            self._keys = load_keyring(self.settings, create=False)
        wanted = {h for o in hashed for h in o.subject_hashes}
        ids: dict[str, str] = {}
        for subject in self.sink.subject_ids():
            for candidate in self._keys.candidates(subject):
                if candidate in wanted:
                    ids[candidate] = subject
        ready, empty = [o for o in orders if not o.by_hash_only], []
        for order in hashed:
            subjects = tuple(ids[h] for h in order.subject_hashes if h in ids)
            if not subjects:
                empty.append(order)
                continue
            account = ids.get(order.subject_hashes[0], "")
            ready.append(dataclasses.replace(order, account_id=account, subjects=subjects))
        return ready, empty

    def erase(self, orders: list[ErasureOrder]) -> dict[str, Outcome]:
        ready, empty = self.resolve(orders)
        outcomes = self.sink.erase(ready) if ready else {}
        return {**outcomes, **{o.request_id: Outcome(AckStatus.NOTHING_FOUND) for o in empty}}

    def verify(self, orders: list[ErasureOrder]) -> dict[str, int]:
        ready, empty = self.resolve(orders)
        found = self.sink.verify(ready) if ready else {}
        return {**found, **{o.request_id: 0 for o in empty}}
