from connectors.postgres.sink import PostgresSink

__all__ = ["PostgresSink"]
