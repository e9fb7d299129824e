from lifecycle.connectors.files.sink import FilesSink

__all__ = ["FilesSink"]
