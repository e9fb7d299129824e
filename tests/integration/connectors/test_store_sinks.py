"""The shipped sinks on their own: idempotence with receipts, legal hold, nothing found."""

from __future__ import annotations

import uuid

import psycopg
import redis

from lifecycle.connectors.base import ErasureOrder
from lifecycle.connectors.files import FilesSink
from lifecycle.connectors.postgres import PostgresSink
from lifecycle.connectors.redis import RedisSink
from lifecycle.core.config import PROJECT_ROOT
from lifecycle.core.keys import Keyring
from lifecycle.core.policy import load_policy

_KEYS = Keyring((b"a test key of sixteen bytes or more",))


POLICY = load_policy(PROJECT_ROOT / "deploy" / "retention.yaml")


def _order(account, legal_hold=False, subjects=None):
    return ErasureOrder(str(uuid.uuid4()), account, tuple(subjects or [account]), legal_hold,
                        tuple(POLICY.erased_at_closure(legal_hold)), tuple(POLICY.pseudonymised_at_closure(legal_hold)))


def _account_folder(root, account):
    (root / account / "billing").mkdir(parents=True)
    (root / account / "billing" / "invoice-1.pdf").write_text("invoice")
    (root / account / "notes.txt").write_text("notes")


def test_files_closure_pseudonymises_billing(tmp_path):
    root = tmp_path / "files"
    _account_folder(root, "acc-p")
    sink = FilesSink(root, _KEYS)
    order = _order("acc-p")
    outcome = sink.erase([order])[order.request_id]
    assert outcome.status == "erased" and outcome.items == 1
    assert not (root / "acc-p").exists()
    kept = list((root / "_retained").rglob("invoice-1.pdf"))
    assert len(kept) == 1 and "acc-p" not in str(kept[0])
    assert sink.erase([order])[order.request_id] == outcome  # redelivered: the same outcome


def test_files_legal_hold_keeps_billing_in_place_until_released(tmp_path):
    root = tmp_path / "files"
    _account_folder(root, "acc-h")
    sink = FilesSink(root, _KEYS)
    order = _order("acc-h", legal_hold=True)
    outcome = sink.erase([order])[order.request_id]
    assert outcome.status == "retained_legal_hold" and outcome.items == 1
    assert [p.name for p in (root / "acc-h").rglob("*") if p.is_file()] == ["invoice-1.pdf"]
    released = _order("acc-h")
    assert sink.erase([released])[released.request_id].status == "nothing_found"  # billing is not "erased"
    assert not (root / "acc-h").exists()
    assert len(list((root / "_retained").rglob("invoice-1.pdf"))) == 1


def test_files_nothing_found_and_hostile_names(tmp_path):
    sink = FilesSink(tmp_path, _KEYS)
    for account in ("acc-none", "../etc", "_receipts"):
        order = _order(account)
        assert sink.erase([order])[order.request_id].status == "nothing_found"
    assert (tmp_path / "_receipts").is_dir()


def test_postgres_batch_erases_many_accounts_in_one_transaction(settings):
    from lifecycle.streams.runtime.database import apply_schema

    apply_schema(settings.postgres_dsn)
    with psycopg.connect(settings.postgres_dsn) as conn:
        for i in range(3):
            conn.execute("INSERT INTO accounts (account_id, status, updated_at) VALUES (%s, 'active', now())",
                         (f"acc-b{i}",))
            conn.execute("INSERT INTO newsletter VALUES (%s, true, null, now())", (f"vis-b{i}",))
    sink = PostgresSink(settings.postgres_dsn)
    try:
        orders = [_order(f"acc-b{i}", subjects=[f"acc-b{i}", f"vis-b{i}"]) for i in range(3)] + [_order("acc-x")]
        outcomes = sink.erase(orders)
        assert [outcomes[o.request_id].items for o in orders] == [2, 2, 2, 0]
        assert outcomes[orders[-1].request_id].status == "nothing_found"
        assert sink.erase(orders) == outcomes
    finally:
        sink.close()


def test_redis_erases_tagged_keys_and_index_members(servers):
    client = redis.Redis.from_url(servers.redis_url)
    client.set("cache:{acc-r1}:a", 1)
    client.set("other:{acc-r10}:a", 1)  # a different account whose id starts the same
    client.sadd("lifecycle:index:t", "acc-r1", "acc-r10")
    sink = RedisSink(servers.redis_url)
    try:
        order = _order("acc-r1")
        assert sink.erase([order])[order.request_id].items == 2
        assert client.exists("other:{acc-r10}:a") and client.sismember("lifecycle:index:t", "acc-r10")
        assert sink.erase([order])[order.request_id].items == 2
    finally:
        sink.close()
        client.close()
