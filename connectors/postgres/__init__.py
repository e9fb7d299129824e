from lifecycle.connectors.postgres.sink import PostgresSink

__all__ = ["PostgresSink"]
