"""Running the pipeline in the foreground: the stack, the topics, the worker processes.

`up` and `demo` share this. Workers run as child processes (``lifecycle worker``) so a worker
that crashes or hangs is restarted or killed without taking the stack down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lifecycle.config import Settings
from lifecycle.embedded import Stack
from lifecycle.embedded.process import free_port, spawn
from lifecycle.errors import StackError
from lifecycle.topics import apply_topics, load_spec

__all__ = ["running_pipeline", "http_get", "wait_ready"]


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(
    settings: Settings, proc: subprocess.Popen[Any], deadline_s: float, say: Callable[[str], None]
) -> None:
    url = f"http://{settings.http_host}:{settings.http_port}/readyz"
    start = time.monotonic()
    last_note = start
    while time.monotonic() - start < deadline_s:
        if proc.poll() is not None:
            raise StackError(f"the worker exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError):
            status, _ = http_get(url, timeout_s=1)
            if status == 200:
                say(f"worker ready after {time.monotonic() - start:.1f} s")
                return
        if time.monotonic() - last_note > 5:
            say(f"  waiting for the worker to join its consumer group ({time.monotonic() - start:.0f} s)")
            last_note = time.monotonic()
        time.sleep(0.25)
    raise StackError(f"the worker was not ready within {deadline_s:.0f} s")


def _sigterm_as_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def running_pipeline(settings: Settings, say: Callable[[str], None]) -> Iterator[tuple[Settings, Stack]]:
    """Start the stack, apply the topics, start a worker and wait until it is ready.

    Everything is stopped on exit, on Ctrl-C and on SIGTERM.
    """
    previous = signal.signal(signal.SIGTERM, _sigterm_as_exit)
    stack = Stack(settings, say=say)
    try:
        info = stack.start()
        live = info.settings
        if not live.redis_url and "redis" in live.erasure_stores:
            live = dataclasses.replace(live, erasure_stores=tuple(x for x in live.erasure_stores if x != "redis"))
            say("no redis-server and no LIFECYCLE_REDIS_URL: the redis store is not registered")
        report = apply_topics(live, load_spec(live.topic_spec))
        say(f"topics: {len(report.created)} created, {len(report.existing)} present, {len(report.drift)} drift")
        for line in report.drift:
            say(f"  drift: {line}")
        log_path = live.state_dir / "logs" / "worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = spawn(
                [sys.executable, "-m", "lifecycle", "worker"],
                log=log,
                env={**os.environ, **live.to_env()},
            )
        stack.adopt(proc)
        say(f"worker started (pid {proc.pid}, log: {log_path}); http on {live.http_host}:{live.http_port}")
        wait_ready(live, proc, deadline_s=120, say=say)
        ports = {store: free_port() for store in live.erasure_stores}
        for store, port in ports.items():
            store_log = live.state_dir / "logs" / f"connector-{store}.log"
            with open(store_log, "ab") as log:
                stack.adopt(spawn([sys.executable, "-m", "lifecycle", "connector", store], log=log,
                                  env={**os.environ, **dataclasses.replace(live, metrics_port=port).to_env()}))
        say(f"connectors started: {', '.join(f'{s} (metrics :{p})' for s, p in ports.items())}")
        targets = write_scrape_targets(live, ports)
        say(f"Prometheus targets (file_sd): {targets}")
        yield live, stack
    finally:
        say("stopping")
        stack.stop()
        signal.signal(signal.SIGTERM, previous)


def write_scrape_targets(live: Settings, connector_ports: dict[str, int]) -> Path:
    """Every /metrics endpoint of this run, in Prometheus' file_sd format, for a local Prometheus
    (`file_sd_configs`; see docs/observability.md)."""
    host = live.http_host
    groups = [{"targets": [f"{host}:{live.http_port}"], "labels": {"job": "lifecycle-worker"}},
              {"targets": [f"{host}:{p}" for p in connector_ports.values()], "labels": {"job": "lifecycle-connector"}}]
    path = live.state_dir / "scrape-targets.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=2))
    os.replace(tmp, path)
    return path


def worker_alive(stack: Stack) -> bool:
    return all(proc.poll() is None for proc, _ in stack.children)

