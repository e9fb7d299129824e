"""The `lifecycle` command: one module per command group (docs: README "Commands")."""

from __future__ import annotations

import argparse
import logging
import sys

from lifecycle.cli import data, erasure, events, keys, proofs, run, stores, topics
from lifecycle.core.config import Settings
from lifecycle.core.errors import LifecycleError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifecycle", description="Privacy-policy data lifecycle pipeline.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (run, topics, events, erasure, data, keys, stores, proofs):
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python warns when its I/O thread waited for the GIL behind a busy producer (the demo,
    # `emit` of a large file): nothing a user can act on, and it broke the demo's progress line.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    try:
        settings = Settings.from_env()
        reads = getattr(args, "reads", None)
        if reads is None:
            return int(args.fn(settings, args) or 0)
        from lifecycle.locate import located

        # Commands that read state find the stack `up` runs (or its stopped database) by themselves.
        with located(settings, broker=reads == "broker", database=reads == "database",
                     say=lambda line: print(line, file=sys.stderr, flush=True)) as found:
            return int(args.fn(found, args) or 0)
    except LifecycleError as exc:
        print(f"lifecycle: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
