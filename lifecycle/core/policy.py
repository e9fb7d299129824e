"""The retention policy (deploy/retention.yaml): one window per data category.

Read once at start by every process that enforces it (workers, connectors, `topics apply`) and
refused with the file, the line and the problem when it is wrong: a typo in a retention policy
must stop the pipeline, not silently keep data forever.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

from lifecycle.core.errors import PolicyError
from lifecycle.core.timeutil import DAY_MS, HOUR_MS, add_months

__all__ = ["Window", "Category", "Policy", "load_policy", "CATEGORIES", "STARTS", "ACTIONS"]

# Every category the pipeline knows; a policy must give each one a window.
CATEGORIES = ("session_logs", "security_information", "consent_history", "account_profile",
              "documents_and_files", "newsletter_audience", "billing_records", "raw_events",
              "raw_analytics_events", "traffic_aggregates", "erasure_orders", "output_streams", "dead_letters")
STARTS = ("event_time", "consent_time", "account_closure")
ACTIONS = ("erase", "pseudonymise")
_KEYS = {"window", "starts", "action", "at_closure", "legal_hold"}
_TOP = {"sweep_every", "categories", "compaction"}
_UNITS = {"hour": "hours", "hours": "hours", "day": "days", "days": "days", "month": "months",
          "months": "months", "year": "years", "years": "years"}
_WINDOW = re.compile(r"^\s*(-?\d+)\s*([a-z]+)\s*$")


@dataclasses.dataclass(frozen=True)
class Window:
    """A length of policy time: fixed hours and days, or calendar months."""

    amount: int
    unit: str  # hours | days | months | years

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}"

    def cutoff(self, now_ms: int) -> int:
        """The start time before which a record is past this window at ``now_ms``."""
        if self.unit == "hours":
            return now_ms - self.amount * HOUR_MS
        if self.unit == "days":
            return now_ms - self.amount * DAY_MS
        return add_months(now_ms, -self.amount * (12 if self.unit == "years" else 1))

    def approx_ms(self) -> int:
        """The window in milliseconds, months counted as 30.44 days (Kafka wants one number)."""
        per = {"hours": HOUR_MS, "days": DAY_MS, "months": 2_629_746_000, "years": 31_556_952_000}
        return self.amount * per[self.unit]


@dataclasses.dataclass(frozen=True)
class Category:
    name: str
    window: Window
    starts: str
    action: str
    at_closure: str
    legal_hold: bool

    @property
    def swept(self) -> bool:
        """Enforced by retention sweeps (the others go with the account's erasure)."""
        return self.starts != "account_closure"


@dataclasses.dataclass(frozen=True)
class Policy:
    path: Path
    sweep_every: Window
    categories: dict[str, Category]
    compaction_max_lag: Window
    tombstone_visible: Window

    def swept(self) -> list[Category]:
        return [c for c in self.categories.values() if c.swept]

    def erased_at_closure(self, legal_hold: bool) -> list[str]:
        """Categories a deletion order erases outright; the others are kept (legal hold) or
        pseudonymised (``at_closure: pseudonymise``)."""
        return [c.name for c in self.categories.values()
                if c.at_closure == "erase" and not (legal_hold and c.legal_hold)]

    def pseudonymised_at_closure(self, legal_hold: bool) -> list[str]:
        return [c.name for c in self.categories.values()
                if c.at_closure == "pseudonymise" and not (legal_hold and c.legal_hold)]


class _Reader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, node: yaml.Node | None, problem: str) -> PolicyError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return PolicyError(f"{self.path}{line}: {problem}")

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.fail(key, f"{what}: keys must be plain names")
            if key.value in out:
                raise self.fail(key, f"{what}: {key.value!r} is given twice")
            out[key.value] = (key, value)
        return out

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.value == "":
            raise self.fail(node, f"{what} must be a single value")
        return str(node.value)

    def window(self, node: yaml.Node, what: str) -> Window:
        text = self.scalar(node, what)
        match = _WINDOW.match(text.lower())
        if not match:
            raise self.fail(node, f"{what} {text!r} is not '<number> hours|days|months|years'")
        amount, unit = int(match.group(1)), match.group(2)
        if unit not in _UNITS:
            raise self.fail(node, f"{what} {text!r}: unknown unit {unit!r} (hours, days, months, years)")
        if amount < 0:
            raise self.fail(node, f"{what} {text!r} is negative")
        return Window(amount, _UNITS[unit])

    def choice(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> str:
        value = self.scalar(node, what)
        if value not in allowed:
            raise self.fail(node, f"{what} {value!r} is not one of {', '.join(allowed)}")
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        value = self.scalar(node, what).lower()
        if value not in ("true", "false"):
            raise self.fail(node, f"{what} must be true or false")
        return value == "true"


def load_policy(path: Path) -> Policy:
    """Read and validate the policy; every error names the file, the line and the problem."""
    reader = _Reader(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PolicyError(f"{path}: retention policy not found") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if root is None:
        raise PolicyError(f"{path}: the file is empty")
    top = reader.mapping(root, "the policy")
    for name, (key, _) in top.items():
        if name not in _TOP:
            raise reader.fail(key, f"unknown key {name!r} (expected {', '.join(sorted(_TOP))})")
    if "categories" not in top:
        raise reader.fail(root, "missing 'categories'")
    sweep_every = reader.window(top["sweep_every"][1], "sweep_every") if "sweep_every" in top else Window(1, "hours")
    compaction = reader.mapping(top["compaction"][1], "compaction") if "compaction" in top else {}
    for name, (key, _) in compaction.items():
        if name not in ("max_lag", "tombstone_visible"):
            raise reader.fail(key, f"compaction: unknown key {name!r} (expected max_lag, tombstone_visible)")
    max_lag = reader.window(compaction["max_lag"][1], "compaction.max_lag") if "max_lag" in compaction \
        else Window(1, "days")
    visible = reader.window(compaction["tombstone_visible"][1], "compaction.tombstone_visible") \
        if "tombstone_visible" in compaction else Window(1, "days")
    categories_node = top["categories"][1]
    categories: dict[str, Category] = {}
    for name, (key, body) in reader.mapping(categories_node, "categories").items():
        if name not in CATEGORIES:
            raise reader.fail(key, f"unknown category {name!r} (known: {', '.join(CATEGORIES)})")
        categories[name] = _category(reader, name, key, body)
    missing = [c for c in CATEGORIES if c not in categories]
    if missing:
        raise reader.fail(categories_node, f"categories: no window for {', '.join(missing)}")
    return Policy(path, sweep_every, categories, max_lag, visible)


def _category(reader: _Reader, name: str, key: yaml.Node, body: yaml.Node) -> Category:
    fields = reader.mapping(body, f"category {name}")
    for field, (fkey, _) in fields.items():
        if field not in _KEYS:
            raise reader.fail(fkey, f"category {name}: unknown key {field!r} (expected {', '.join(sorted(_KEYS))})")
    for required in ("window", "starts", "action"):
        if required not in fields:
            raise reader.fail(key, f"category {name}: missing {required!r}")

    def node(field: str) -> yaml.Node:
        return fields[field][1]

    window = reader.window(node("window"), f"category {name}: window")
    starts = reader.choice(node("starts"), f"category {name}: starts", STARTS)
    action = reader.choice(node("action"), f"category {name}: action", ACTIONS)
    at_closure = reader.choice(node("at_closure"), f"category {name}: at_closure", ACTIONS) \
        if "at_closure" in fields else "erase"
    legal_hold = reader.boolean(node("legal_hold"), f"category {name}: legal_hold") if "legal_hold" in fields else False
    if starts == "account_closure" and window.amount != 0:
        # Erasure at closure is one order with one deadline; a delay would need a second order.
        raise reader.fail(node("window"), f"category {name}: a window that starts at account_closure "
                                          "must be 0 (erased by the closure's erasure)")
    if starts == "account_closure" and "at_closure" in fields and at_closure != action:
        raise reader.fail(node("at_closure"), f"category {name}: at_closure and action disagree")
    return Category(name, window, starts, action, at_closure, legal_hold)
