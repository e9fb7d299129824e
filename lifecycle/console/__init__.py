"""The privacy operations console, served by the worker at /console (docs/console.md)."""

from lifecycle.console.views import register_console

__all__ = ["register_console"]
