"""`lifecycle topics apply`: the topics of deploy/topics.yaml."""

from __future__ import annotations

import argparse
from typing import Any

from lifecycle.cli.common import need_broker, say
from lifecycle.core.config import Settings

__all__ = ["add_commands"]


def cmd_topics_apply(settings: Settings, args: argparse.Namespace) -> int:
    need_broker(settings, "topics apply")
    from lifecycle.topics import apply_topics, load_spec

    report = apply_topics(settings, load_spec(settings.topic_spec, args.profile or settings.topic_profile))
    for line in report.lines():
        say(line)
    return 2 if (report.drift and args.strict) else 0


def add_commands(sub: Any) -> None:
    topics = sub.add_parser("topics", help="topic administration").add_subparsers(dest="action", required=True)
    apply = topics.add_parser("apply", help="create every topic of deploy/topics.yaml; report drift")
    apply.add_argument("--profile", default=None,
                       help="a profile of the spec, e.g. production (default: LIFECYCLE_TOPIC_PROFILE)")
    apply.add_argument("--strict", action="store_true", help="exit 2 when drift is found")
    apply.set_defaults(fn=cmd_topics_apply)
