"""Traffic trends, never linked to a person (docs/processors.md)."""

from lifecycle.streams.runtime.feature import Feature
from lifecycle.streams.traffic.processor import DIMENSIONS, TrafficProcessor

__all__ = ["FEATURE", "DIMENSIONS", "TrafficProcessor"]

FEATURE = Feature("traffic", processors=(TrafficProcessor(),))
