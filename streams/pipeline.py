"""The worker as the HTTP views and the console see it: the Faust app (producer, web server, timers)
and what the worker's stages share. Built by streams/app.py ``build_app``."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from lifecycle.core.clock import Clock
from lifecycle.core.config import Settings
from lifecycle.schemas.codec import Codec
from lifecycle.streams.ingest.loop import IntakeLoop
from lifecycle.streams.runtime.acks import AcksLoop
from lifecycle.streams.runtime.context import PipelineContext
from lifecycle.streams.runtime.deadletters import DeadLetters
from lifecycle.streams.runtime.health import Health
from lifecycle.streams.runtime.metrics import Metrics

__all__ = ["Pipeline", "WorkerApp"]


class WorkerApp(faust.App):
    """Faust starts app tasks only once its own consumer has joined its group (and its table
    recovery is done); the worker's consumer loops start with the app instead, registered with
    ``start_with`` as tasks are with ``app.task``, so that they join their groups at once. Faust
    itself consumes nothing: its producer, web server, tasks and timers are all the worker uses."""

    producer_only = True  # Faust's boot strategy without its consumer, conductor and tables

    _loops: tuple[Callable[[], Awaitable[None]], ...] = ()

    def start_with(self, *loops: Callable[[], Awaitable[None]]) -> None:
        self._loops = (*self._loops, *loops)

    async def on_start(self) -> None:
        await super().on_start()
        for loop in self._loops:
            self.add_future(loop())

    def kafka_producer(self) -> Any:
        """The aiokafka producer under Faust's, for sending record batches (streams/runtime/sending.py):
        Faust's own ``send`` takes one record at a time. Raises until the producer has started."""
        return self.producer._ensure_producer()  # type: ignore[attr-defined]


@dataclasses.dataclass
class Pipeline:
    """The app and what its agents share."""

    app: WorkerApp
    settings: Settings
    codec: Codec
    metrics: Metrics
    clock: Clock
    context: PipelineContext
    health: Health  # what /readyz shows
    dead_letters: DeadLetters  # shared by every stage that rejects a consumed record
    intake: IntakeLoop  # the input topics (streams/ingest/loop.py)
    acks: AcksLoop  # the stores' answers on erasure-acks (streams/runtime/acks.py)
