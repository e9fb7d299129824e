"""Events in: the ingest journal behind `POST /v1/events`, the intake loop that reads the input
topics, and the batch applied in one transaction (docs/architecture.md, "The data path")."""
