"""The worker as the HTTP views and the console see it: the Faust app (producer, web server, timers)
and what the worker's stages share. Built by streams/app.py ``build_app``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
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

log = logging.getLogger("lifecycle.worker")

# Fault injection (tests only): the intake loop is cancelled from inside after this many seconds,
# as a cancellation leaking out of a library call would (tests/integration/runtime/test_loop_death.py).
_CANCEL_INTAKE_AFTER_S = float(os.environ.get("LIFECYCLE_FAULT_CANCEL_INTAKE_AFTER_S") or 0)


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
            self.add_future(self._supervised(loop))

    async def _supervised(self, loop: Callable[[], Awaitable[None]]) -> None:
        """A consume loop ends only with the worker. Faust's task runner crashes the app on an
        exception but lets a CancelledError end the task quietly: a cancellation leaking out of a
        library call would leave a worker that looks alive and reads nothing. So a loop that ends
        while the worker runs, however it ends, stops the worker loudly, for its supervisor
        (`lifecycle up`, systemd, Kubernetes) to start again from PostgreSQL's offsets."""
        name = getattr(loop, "__qualname__", repr(loop))
        try:
            if _CANCEL_INTAKE_AFTER_S and name.startswith("IntakeLoop."):
                await self._cancelled_after(loop, _CANCEL_INTAKE_AFTER_S)
            else:
                await loop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.should_stop or (task is not None and task.cancelling()):
                raise
            how, reason = "cancelled from inside", None
        except Exception as exc:
            how, reason = f"raised {type(exc).__name__}", exc
        else:
            if self.should_stop:
                return
            how, reason = "returned", None
        log.error("%s ended while the worker runs (%s): the worker stops, to be started again", name, how)
        await self.crash(reason or RuntimeError(f"{name} ended while the worker runs ({how})"))

    @staticmethod
    async def _cancelled_after(loop: Callable[[], Awaitable[None]], after_s: float) -> None:
        inner = asyncio.ensure_future(loop())
        asyncio.get_running_loop().call_later(after_s, inner.cancel)
        await inner

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
