"""The machinery every feature uses and none owns: the per-transaction context, the database,
the outbox and its wake-up, sealing, decoding and dead letters, metrics, health, the consumers and
the acks loop. It imports no feature (tests/unit/test_layers.py)."""
