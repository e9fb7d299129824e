"""External programs some tests need that ship in no wheel (lifecycle/embedded/prometheus.py):
where they cannot be had, the test is skipped with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.core.errors import StackError
from lifecycle.embedded.prometheus import prometheus_binary

__all__ = ["prometheus_tool"]


def prometheus_tool(name: str) -> Path:
    try:
        return prometheus_binary(name)
    except StackError as exc:
        pytest.skip(str(exc))
