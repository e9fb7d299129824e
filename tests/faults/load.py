"""A load generator for the fault tests, and the counting that proves what survived.

Every account lives the same small life (registration with personal data, verification,
consent, newsletter, a session with three files, a failed login, a page view, some restrictions
and withdrawals), so what each store must hold is known exactly; a fifth of the accounts are
closed in a second phase, after their lives were applied, so that none of their events can be
suppressed by their own erasure. Events are counted as accepted once the producer's flush
confirmed them (acks=all).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from lifecycle.connectors.emitter import Emitter
from lifecycle.core.config import Settings
from tests.helpers import MINUTE, T0, event, wait_for
from tests.unit.samples import PII

FILES = 3


def size(i: int, f: int) -> int:
    return 1000 + 10 * i + f


class Load:
    def __init__(self, settings: Settings, tag: str = "f"):
        self.settings = settings
        self.tag = tag
        self.accepted: list[str] = []
        self.accounts: list[int] = []
        self.closed: list[int] = []
        self.withdrawn: set[int] = set()
        self.errors: list[BaseException] = []
        self.kinds: dict[str, tuple[str, str | None]] = {}  # event id -> (event type, account), for failures

    def account(self, i: int) -> str:
        return f"acc-{self.tag}{i:05d}"

    def life(self, i: int) -> list[dict]:
        acc, vis, sid = self.account(i), f"vis-{self.tag}{i:05d}", f"s-{self.tag}{i:05d}"
        at = T0 + i * 1000
        events = [
            event("account.registered", at, account=acc, email=PII["email"], first_name=PII["first_name"],
                  last_name=PII["last_name"], phone=PII["phone"]),
            event("account.email_verified", at + 1, account=acc),
            event("consent.cookies_granted", at + 2, account=acc, visitor=vis, purposes=["necessary", "analytics"],
                  policy_version="2026-01"),
            event("consent.newsletter_subscribed", at + 3, account=acc),
            event("session.started", at + 4, account=acc, session_id=sid, ip=PII["ip"], login_method="password"),
            *[event("session.file_transferred", at + 5 + f, account=acc, session_id=sid, mime_type="application/pdf",
                    size_bytes=size(i, f)) for f in range(FILES)],
            event("session.ended", at + MINUTE, account=acc, session_id=sid, reason="logout"),
            event("session.login_failed", at + MINUTE + 1, account=acc, ip=PII["ip"]),
            event("analytics.page_viewed", at + MINUTE + 2, visitor=vis, account=acc, path="/app"),
        ]
        if i % 7 == 3:
            events += [event("account.processing_restricted", at + MINUTE + 3, account=acc),
                       event("account.processing_restored", at + MINUTE + 4, account=acc),
                       event("account.updated", at + MINUTE + 5, account=acc, first_name=PII["first_name"])]
        if i % 11 == 5:
            self.withdrawn.add(i)
            events += [event("consent.cookies_withdrawn", at + MINUTE + 6, account=acc, purposes=["analytics"],
                             policy_version="2026-01"),
                       event("consent.newsletter_unsubscribed", at + MINUTE + 7, account=acc)]
        return events

    def _send(self, emitter: Emitter, events: list[dict]) -> None:
        ids = [emitter.emit(e) for e in events]
        emitter.flush()
        self.accepted.extend(ids)
        self.kinds.update((i, (e["event_type"], e.get("account_id"))) for i, e in zip(ids, events, strict=True))

    def lives(self, until: Callable[[], bool], per_chunk: int = 10, pause_s: float = 1.0, most: int = 2000) -> None:
        """Emit lives in chunks until ``until()`` says stop (or ``most`` accounts)."""
        with Emitter(self.settings) as emitter:
            i = len(self.accounts)
            while not until() and i < most:
                chunk = list(range(i, i + per_chunk))
                for n in chunk:  # business documents, so that the files store has work too
                    folder = self.settings.files_dir / self.account(n)
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / "contract.txt").write_text("terms")
                self._send(emitter, [e for n in chunk for e in self.life(n)])
                self.accounts.extend(chunk)
                i += per_chunk
                time.sleep(pause_s)

    def closures(self, pause_s: float = 0.5) -> None:
        """Close every fifth account, a few at a time."""
        with Emitter(self.settings) as emitter:
            doomed = [i for i in self.accounts if i % 5 == 0]
            for start in range(0, len(doomed), 5):
                chunk = doomed[start:start + 5]
                self._send(emitter, [event("account.closed", T0 + 10 * 86_400_000, account=self.account(i))
                                     for i in chunk])
                self.closed.extend(chunk)
                time.sleep(pause_s)

    def in_background(self, fn: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # surfaced by the test after join
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def _one(conn: psycopg.Connection, sql: str, *params: object) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def processed(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_dsn) as conn:
        return _one(conn, "SELECT count(*) FROM processed_events")


def missing_events(settings: Settings, load: Load) -> list[str]:
    with psycopg.connect(settings.postgres_dsn) as conn:
        done = {str(r[0]) for r in conn.execute("SELECT event_id FROM processed_events")}
    return [e for e in load.accepted if e not in done]


def assert_all_applied(settings: Settings, load: Load, deadline_s: float) -> None:
    """Every accepted event applied within ``deadline_s``; if not, what is missing and where."""
    try:
        wait_for(lambda: processed(settings) >= len(load.accepted), deadline_s=deadline_s,
                 what="every accepted event applied")
    except AssertionError:
        raise AssertionError(f"accepted but never applied: {describe_missing(settings, load)}") from None


def describe_missing(settings: Settings, load: Load) -> str:
    """What the accepted events never applied were: how many, their types, and whether their
    accounts were closed (an event of an erased account is silenced, not applied)."""
    missing = missing_events(settings, load)
    closed = {load.account(i) for i in load.closed}
    kinds: dict[str, int] = {}
    for event_id in missing:
        event_type, account = load.kinds.get(event_id, ("?", None))
        key = f"{event_type}{' (closed account)' if account in closed else ''}"
        kinds[key] = kinds.get(key, 0) + 1
    return (f"{len(missing)} of {len(load.accepted)}: {sorted(kinds.items())}; first: {missing[:5]}; "
            f"input partitions whose stored position is not their log's end: {_behind(settings)}")


def _behind(settings: Settings) -> list[tuple[str, int, int, int]]:
    """(topic, partition, stored next offset, log end) where they differ: stored at the end with
    events missing means they were skipped; stored short of it, that the intake stopped reading."""
    from kafka import KafkaConsumer, TopicPartition

    from lifecycle.schemas.catalog import load_catalog

    topics = [settings.topic(t) for t in load_catalog().input_topics]
    with psycopg.connect(settings.postgres_dsn) as conn:
        stored = {(t, p): o for t, p, o in conn.execute("SELECT topic, partition, next_offset FROM intake_offsets")}
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_kwargs())
    try:
        parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends = consumer.end_offsets(parts)
    finally:
        consumer.close()
    return sorted((tp.topic, tp.partition, stored.get((tp.topic, tp.partition), 0), end)
                  for tp, end in ends.items() if stored.get((tp.topic, tp.partition), 0) != end)


def assert_exactly_once(settings: Settings, load: Load) -> None:
    """Every accepted event applied once; every store holds exactly what it should; every
    closed account erased everywhere, with its proof, and nothing of it back."""
    live = [i for i in load.accounts if i not in load.closed]
    with psycopg.connect(settings.postgres_dsn) as conn:
        assert _one(conn, "SELECT count(*) FROM processed_events") == len(load.accepted)
        assert _one(conn, "SELECT count(*) FROM accounts") == len(live)
        logs = conn.execute("SELECT account_id, file_count, total_bytes FROM session_logs").fetchall()
        assert sorted(logs) == sorted((load.account(i), FILES, sum(size(i, f) for f in range(FILES))) for i in live)
        assert _one(conn, "SELECT count(*) FROM session_files") == 0
        assert _one(conn, "SELECT count(*) FROM failed_logins") == len(live)
        expected_history = sum(2 + (2 if i in load.withdrawn else 0) for i in live)
        assert _one(conn, "SELECT count(*) FROM consent_history") == expected_history
        assert _one(conn, "SELECT count(*) FROM newsletter WHERE subscribed") == \
            len([i for i in live if i not in load.withdrawn])
        assert _one(conn, "SELECT count(*) FROM erasure_requests WHERE state = 'complete'") == len(load.closed)
        assert _one(conn, "SELECT count(*) FROM erasure_requests WHERE state <> 'complete'") == 0
        assert _one(conn, "SELECT count(*) FROM erasure_proofs") == len(load.closed)
        erased = [load.account(i) for i in load.closed]
        for table, column in (("accounts", "account_id"), ("session_logs", "account_id"),
                              ("failed_logins", "account_id"), ("consent_history", "subject_id"),
                              ("newsletter", "subject_id"), ("account_visitors", "account_id")):
            assert _one(conn, f"SELECT count(*) FROM {table} WHERE {column} = ANY(%s)", erased) == 0, table
    for i in load.closed:
        assert not (settings.files_dir / load.account(i)).exists()
