"""The ground every other package stands on: configuration, errors, time and the clock, the hash
keys, the retention policy, backoff. It imports nothing of the project above it (schemas, streams,
connectors, the lifecycle shell); tests/unit/test_layers.py keeps it so."""
