"""`lifecycle up`, `demo`, `worker` and `connector`: the processes that run the pipeline."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lifecycle.cli.common import need_broker, say
from lifecycle.core.config import Settings

__all__ = ["add_commands"]


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from lifecycle.supervisor import supervised_pipeline

    try:
        with supervised_pipeline(settings, say) as supervisor:
            say(f"up: broker {supervisor.live.kafka_bootstrap}; press Ctrl-C to stop")
            while True:
                supervisor.watch()
                time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from lifecycle.demo import run_demo

    serve = args.serve if args.serve is not None else 600 if sys.stdin.isatty() and sys.stdout.isatty() else 0
    return run_demo(settings, say, accounts=args.accounts, visitors=args.visitors, serve_s=serve)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    need_broker(settings, "worker")
    import faust

    from lifecycle.connectors.stores import database_grants, retention_categories
    from lifecycle.console import register_console
    from lifecycle.streams.app import build_app

    pipeline = build_app(settings, swept_by=retention_categories, store_grants=database_grants())
    register_console(pipeline)
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level.upper(), quiet=True)
    # At WARNING and above Faust's terminal spinner sets the root logger to DEBUG for ever: every
    # library's debug call (aiokafka's, one per record sent) then built a record for nothing.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def cmd_front(settings: Settings, args: argparse.Namespace) -> int:
    """Serve `POST /v1/events` alone until SIGTERM or Ctrl-C (streams/http/front.py)."""
    need_broker(settings, "front")
    import asyncio

    from lifecycle.streams.http.front import serve_front

    port = args.port if args.port is not None else settings.http_port
    asyncio.run(serve_front(settings, port, ready=lambda p: say(
        f"front: POST /v1/events on http://{settings.http_host}:{p} (journal, then {settings.kafka_bootstrap})")))
    return 0


def cmd_connector(settings: Settings, args: argparse.Namespace) -> int:
    """Run one downstream store's connector until SIGTERM or Ctrl-C."""
    need_broker(settings, "connector")
    import signal
    import threading

    from lifecycle.connectors.base import run_connector
    from lifecycle.connectors.base.metrics import ConnectorMetrics
    from lifecycle.connectors.base.runner import categories_of
    from lifecycle.connectors.stores import make_sink
    from lifecycle.core.keys import open_keyring
    from lifecycle.core.pgroles import as_component

    # Refused here when empty or not the database's, before any order is read; with the store's
    # own role, which reads the fingerprints and nothing else of the key tables.
    open_keyring(as_component(settings, f"store-{args.store}"), read_only=True)
    sink = make_sink(args.store, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    metrics = ConnectorMetrics.create(sink.name, categories_of(sink))
    if settings.metrics_port is not None:
        metrics.serve(settings.http_host, settings.metrics_port)
        say(f"connector {sink.name}: metrics on http://{settings.http_host}:{settings.metrics_port}/metrics")
    say(f"connector {sink.name}: consuming {settings.topic('tombstones')}, {settings.topic('retention-orders')} "
         f"and {settings.topic('access-orders')}")
    run_connector(settings, sink, stop, metrics)
    return 0


def add_commands(sub: Any) -> None:
    sub.add_parser("up", help="embedded stack + topics + worker, in the foreground").set_defaults(fn=cmd_up)
    demo = sub.add_parser("demo", help="`up`, driven by simulated upstream traffic, ending with a report")
    demo.add_argument("--accounts", type=int, default=200)
    demo.add_argument("--visitors", type=int, default=300)
    demo.add_argument("--serve", type=int, default=None, metavar="SECONDS",
                      help="keep the pipeline and its console running this long after the report (Ctrl-C stops "
                           "sooner; default: 600 in a terminal, else 0)")
    demo.set_defaults(fn=cmd_demo)
    sub.add_parser("worker", help="one stream worker against LIFECYCLE_KAFKA_BOOTSTRAP").set_defaults(fn=cmd_worker)
    front = sub.add_parser("front", help="POST /v1/events alone, in a process of its own (beside the workers)")
    front.add_argument("--port", type=int, default=None, help="default: LIFECYCLE_HTTP_PORT")
    front.set_defaults(fn=cmd_front)
    connector = sub.add_parser("connector", help="run one downstream store's erasure connector")
    connector.add_argument("store", help="postgres, redis, files or mailing-list")
    connector.set_defaults(fn=cmd_connector)
