"""Global Privacy Control as an event: a request that carried `Sec-GPC: 1` (or a server-side
caller relaying it, `Emitter.emit(event, gpc=True)`) becomes one `consent.gpc_signal` per subject
it names, applied by the consent processor (docs/processors.md, Global Privacy Control)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from lifecycle.schemas.catalog import Catalog, RecordType

__all__ = ["GPC_EVENT", "gpc_signals"]

GPC_EVENT = "consent.gpc_signal"
_NAMESPACE = uuid.UUID("5f1c8a2e-3b7d-4c1e-9a0f-6d2b8e4c7a13")


def gpc_signals(catalog: Catalog, events: Iterable[tuple[RecordType, dict[str, Any]]],
                source: str = "Sec-GPC") -> list[tuple[RecordType, dict[str, Any]]]:
    """One signal per distinct (account, visitor) among ``events``, dated as the event that
    carried it; its id derives from that event's, so a request sent again adds no second one."""
    record = catalog.by_event_type(GPC_EVENT)
    assert record is not None, "schemas/avro/ConsentGpcSignal.avsc"
    seen: set[tuple[str | None, str | None]] = set()
    out = []
    for carrier, value in events:
        pair = (value.get("account_id"), value.get("visitor_id"))
        if carrier.event_type == GPC_EVENT or not any(pair) or pair in seen:
            continue
        seen.add(pair)
        out.append((record, {"event_id": str(uuid.uuid5(_NAMESPACE, str(value["event_id"]))), "event_type": GPC_EVENT,
                             "occurred_at": value["occurred_at"], "account_id": pair[0], "visitor_id": pair[1],
                             "source": source}))
    return out
