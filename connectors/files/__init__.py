from connectors.files.sink import FilesSink

__all__ = ["FilesSink"]
