"""The Faust application: configuration for our brokers and the agents of every processor.

One app per worker process, built by ``build_app`` from the settings so tests can build their
own with a fresh metrics registry.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from lifecycle.config import Settings
from schemas.catalog import Catalog, load_catalog
from schemas.codec import Codec
from schemas.registry import make_registry
from streams.clock import Clock, WallClock
from streams.intake import Origin, Rejected, dead_letter, triage
from streams.metrics import Metrics

__all__ = ["Pipeline", "build_app"]

log = logging.getLogger("lifecycle.worker")

INTAKE_BATCH = 500
INTAKE_WITHIN_S = 0.2


@dataclasses.dataclass
class Pipeline:
    """The app and what its agents share."""

    app: faust.App
    settings: Settings
    codec: Codec
    metrics: Metrics
    clock: Clock
    ready: bool = False


def _credentials(settings: Settings) -> Any:
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    context = None
    if proto.endswith("SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    if proto.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def build_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Clock | None = None,
    catalog: Catalog | None = None,
) -> Pipeline:
    """Build the Faust app with every agent registered."""
    catalog = catalog or load_catalog()
    registry = registry or CollectorRegistry()
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(settings.state_dir / "faust"),
        topic_partitions=4,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=1,
        broker_commit_interval=0.5,
        web_enabled=True,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_graph_enabled=False,
        web_tables_enabled=False,
    )
    pipeline = Pipeline(
        app=app,
        settings=settings,
        codec=Codec(make_registry(settings.schema_registry_url, catalog), catalog, topic_prefix=settings.topic_prefix),
        metrics=Metrics.create(registry, catalog),
        clock=clock or WallClock(),
    )
    _register_intake(pipeline, catalog)
    from streams.web import register_views

    register_views(pipeline)

    @app.on_rebalance_complete.connect
    async def _ready(sender: Any, **kwargs: Any) -> None:
        pipeline.ready = True
        pipeline.metrics.worker_ready.set(1)

    return pipeline


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )


def _register_intake(pipeline: Pipeline, catalog: Catalog) -> None:
    app, settings = pipeline.app, pipeline.settings
    dead_letters = _raw_topic(app, settings.topic("dead-letters"))
    for contract_topic in catalog.input_topics:
        topic = _raw_topic(app, settings.topic(contract_topic))
        app.agent(topic, name=f"intake-{contract_topic}")(
            _intake_agent(pipeline, contract_topic, dead_letters)
        )


def _intake_agent(pipeline: Pipeline, contract_topic: str, dead_letters: Any) -> Any:
    codec, metrics, clock = pipeline.codec, pipeline.metrics, pipeline.clock
    rejected_children: dict[str, Any] = {}
    ingested_children: dict[str, Any] = {}
    dlq_counter = metrics.dead_letters_written.labels(contract_topic)

    async def intake(stream: Any) -> None:
        async for events in stream.take_events(INTAKE_BATCH, within=INTAKE_WITHIN_S):
            pending = []
            counts: dict[str, int] = {}
            rejects: dict[str, int] = {}
            for event in events:
                msg = event.message
                outcome = triage(codec, contract_topic, msg.value)
                if isinstance(outcome, Rejected):
                    origin = Origin(msg.topic, msg.partition, msg.offset, _ts_ms(msg), msg.key)
                    key, value, headers = dead_letter(codec, outcome, origin, msg.value, clock.now_ms())
                    pending.append(await dead_letters.send(key=key, value=value, headers=headers))
                    rejects[outcome.reason] = rejects.get(outcome.reason, 0) + 1
                    log.warning(
                        "dead-lettered %s[%d]@%d: %s",
                        msg.topic, msg.partition, msg.offset, outcome.reason,
                    )
                else:
                    et = outcome.record.event_type or ""
                    counts[et] = counts.get(et, 0) + 1
            # The batch is acknowledged only after every dead letter is on the broker.
            for fut in pending:
                await fut
            dlq_counter.inc(len(pending))
            for et, n in counts.items():
                child = ingested_children.get(et)
                if child is None:
                    child = ingested_children[et] = metrics.events_ingested.labels(contract_topic, et)
                child.inc(n)
            for reason, n in rejects.items():
                child = rejected_children.get(reason)
                if child is None:
                    child = rejected_children[reason] = metrics.events_rejected.labels(contract_topic, reason)
                child.inc(n)

    intake.__name__ = intake.__qualname__ = f"intake_{contract_topic.replace('-', '_')}"
    return intake


def _ts_ms(msg: Any) -> int | None:
    ts = getattr(msg, "timestamp", None)
    return int(ts * 1000) if ts else None
