"""The embedded stack every benchmark starts from: a temporary folder, the event-time clock, one
store, topics under a prefix of the benchmark's name, the schema applied."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lifecycle.core.config import Settings
from lifecycle.embedded import Stack
from lifecycle.embedded.process import free_port
from lifecycle.streams.runtime.database import apply_schema
from lifecycle.topics import apply_topics, load_spec


@contextlib.contextmanager
def bench_stack(name: str, **changes: Any) -> Iterator[tuple[Settings, Path]]:
    """(settings, work folder) of a fresh embedded stack, stopped on leaving."""
    work = Path(tempfile.mkdtemp(prefix=f"lifecycle-{name}-"))
    base = Settings.from_env({"LIFECYCLE_STATE_DIR": str(work / "state")})
    with Stack(base) as info:
        settings = dataclasses.replace(info.settings, clock="event", erasure_stores=("postgres",),
                                       topic_prefix=f"{name}.", http_port=free_port(), **changes)
        apply_topics(settings, load_spec(settings.topic_spec))
        apply_schema(settings.postgres_dsn or "")
        yield settings, work


def start_worker(settings: Settings, work: Path) -> subprocess.Popen[bytes]:
    """A `lifecycle worker` on these settings, logging at warning level into ``work/worker.log``."""
    env = {**os.environ, **settings.to_env(), "LIFECYCLE_LOG_LEVEL": "warning"}
    with open(work / "worker.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "lifecycle", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
