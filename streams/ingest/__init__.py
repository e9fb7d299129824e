"""Events in: the ingest journal behind `POST /v1/events`, the intake loop that reads the input
topics, and the batch applied in one transaction (docs/architecture.md, "The data path")."""

from lifecycle.streams.ingest.dedupe import DedupeWindow, dedupe_tick, dedupe_window_ms
from lifecycle.streams.ingest.quietkeys import quiet_keys_tick
from lifecycle.streams.runtime.feature import Feature, Tick

__all__ = ["FEATURE", "DedupeWindow", "dedupe_window_ms"]

# The intake itself is the runtime's loop over every feature's processors (streams/app.py); what
# ingest adds as a feature is the clock that moves its deduplication window on, and deletes the data
# keys nobody has sealed with for longer than the log keeps a sealed value.
FEATURE = Feature("ingest", ticks=(Tick("dedupe window", dedupe_tick), Tick("quiet data keys", quiet_keys_tick)))
