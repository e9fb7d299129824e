"""Sealed values and the data-key cache (lifecycle/core/crypto.py, datakeys.py), without a
database: a stand-in connection answers the two statements the way PostgreSQL does."""

from __future__ import annotations

import secrets

import pytest

from lifecycle.core.crypto import ERASED, Forged, LocalMasterKey, MasterKeyMismatch, new_kid
from lifecycle.core.datakeys import DataKeys
from lifecycle.core.keys import Keyring
from lifecycle.schemas.catalog import load_catalog
from lifecycle.schemas.personal import seal, unseal


class _Table:
    """data_keys as rows: answers get-or-create and lookup-by-kid."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list] = {}  # (hash, category) -> [kid, wrapped]
        self.calls = 0
        self.stale: set[str] = set()  # kids last used on an earlier day
        self.swept: set[str] = set()  # kids the quiet-key sweep deletes just before they are marked used

    def execute(self, sql, params):
        self.calls += 1
        out = []
        if sql.lstrip().startswith("WITH today"):
            kids, hashes, cats, wrapped = params[:4]
            for kid, h, c, w in zip(kids, hashes, cats, wrapped, strict=True):
                created = (h, c) not in self.rows
                if created:
                    self.rows[(h, c)] = [kid, w]
                kid_now = self.rows[(h, c)][0]
                out.append((kid_now, h, c, self.rows[(h, c)][1], False, kid_now in self.stale))
        elif sql.lstrip().startswith("UPDATE data_keys"):
            self.rows = {k: v for k, v in self.rows.items() if v[0] not in self.swept}
            alive = {v[0] for v in self.rows.values()}
            out = [(kid,) for kid in params[0] if kid in alive]
            self.stale -= set(params[0])
        else:
            wanted = set(params[0])
            out = [(kid, h, c, w, kid in self.stale) for (h, c), (kid, w) in self.rows.items() if kid in wanted]
        return _Result(out)


class _Result:
    def __init__(self, rows):
        self._rows = rows

    def fetchall(self):
        return self._rows


class _Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def _keys(clock=None, master=None):
    return DataKeys(master or LocalMasterKey(secrets.token_bytes(32), "test"), Keyring((b"k" * 32,)), cache_s=30,
                    now=clock or _Clock())


def _sealed(keys, table, subject="acc-1"):
    record = load_catalog().by_name("AccountRegistered")
    prepared = keys.prepare_sync(table, [(subject, "account_profile")])
    value = {"email": "a@example.test", "first_name": "Ada", "last_name": "L", "phone": None}
    return record, seal(keys.keys_of(prepared, subject), record, value, subject)


def test_a_sealed_value_opens_as_its_own_field_of_its_own_subject_only():
    keys, table = _keys(), _Table()
    record, sealed = _sealed(keys, table)
    assert sealed["email"].startswith("lc1:") and "a@example.test" not in str(sealed)
    assert sealed["phone"] is None
    keys.load_sync(table, [sealed["email"]])
    opened, clear = unseal(keys, record, sealed, "acc-1")
    assert opened["email"] == "a@example.test" and opened["first_name"] == "Ada" and clear == 0
    with pytest.raises(Forged):
        keys.open(sealed["email"], "acc-2", "email")  # moved to another person
    with pytest.raises(Forged):
        keys.open(sealed["email"], "acc-1", "first_name")  # moved to another field
    tampered = sealed["email"][:-2] + ("A" if sealed["email"][-2] != "A" else "B") + sealed["email"][-1]
    with pytest.raises(Forged):
        keys.open(tampered, "acc-1", "email")
    with pytest.raises(Forged):
        keys.open("lc1:" + new_kid() + ":AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "acc-1", "email")  # no such key
    with pytest.raises(Forged):
        keys.open("lc1:short:xx", "acc-1", "email")


def test_clear_values_are_counted_and_left_as_they_are():
    keys = _keys()
    record = load_catalog().by_name("AccountRegistered")
    opened, clear = unseal(keys, record, {"email": "c@example.test", "first_name": "C", "last_name": "D",
                                          "phone": None}, "acc-1")
    assert clear == 3 and opened["email"] == "c@example.test"


def test_a_destroyed_key_opens_to_the_erased_marker():
    keys, table = _keys(), _Table()
    record, sealed = _sealed(keys, table)
    for row in table.rows.values():
        row[1] = None  # what the erasure's destroy leaves
    fresh = _keys(master=keys.wrapper)  # a process with a cold cache
    fresh.load_sync(table, [sealed["email"]])
    assert fresh.open(sealed["email"], "acc-1", "email") == ERASED
    prepared = fresh.prepare_sync(table, [("acc-1", "account_profile")])
    assert fresh.seal(prepared, "new@example.test", "acc-1", "account_profile", "email") == ERASED


def test_cached_keys_expire_after_the_configured_time():
    clock = _Clock()
    keys, table = _keys(clock), _Table()
    _, sealed = _sealed(keys, table)
    keys.load_sync(table, [sealed["email"]])
    calls = table.calls
    clock.t = 29
    keys.load_sync(table, [sealed["email"]])
    assert table.calls == calls  # still cached
    clock.t = 31
    assert keys.opening_missing([sealed["email"]])  # past LIFECYCLE_DATA_KEY_CACHE_S: asked again
    keys.prepare_sync(table, [("acc-1", "account_profile")])
    assert table.calls == calls + 1


def test_a_key_last_used_on_an_earlier_day_is_marked_used_before_it_seals_and_cached_after():
    keys, table = _keys(), _Table()
    _sealed(keys, table)
    [(kid, _)] = table.rows.values()
    table.stale.add(kid)
    fresh = _keys(master=keys.wrapper)  # a cold cache: the key comes from the table, stale
    calls = table.calls
    prepared = fresh.prepare_sync(table, [("acc-1", "account_profile")])
    assert [k.kid for k in prepared.values()] == [kid] and table.calls == calls + 2  # fetched, marked used
    fresh.prepare_sync(table, [("acc-1", "account_profile")])
    assert table.calls == calls + 2 and not table.stale  # cached once the mark is made


def test_a_key_deleted_as_quiet_while_being_fetched_is_made_anew():
    keys, table = _keys(), _Table()
    _, sealed = _sealed(keys, table)
    [(kid, _)] = table.rows.values()
    table.stale.add(kid)
    table.swept.add(kid)
    fresh = _keys(master=keys.wrapper)
    prepared = fresh.prepare_sync(table, [("acc-1", "account_profile")])
    [(new_kid_, _)] = table.rows.values()
    assert [k.kid for k in prepared.values()] == [new_kid_] and new_kid_ != kid
    value = fresh.seal(prepared, "b@example.test", "acc-1", "account_profile", "email")
    fresh.load_sync(table, [value])
    assert fresh.open(value, "acc-1", "email") == "b@example.test"
    fresh.load_sync(table, [sealed["email"]])
    with pytest.raises(Forged):  # what was sealed under the deleted key names no key now
        fresh.open(sealed["email"], "acc-1", "email")


def test_a_master_key_that_did_not_wrap_a_key_is_refused_with_where_it_came_from():
    keys, table = _keys(), _Table()
    _, sealed = _sealed(keys, table)
    other = _keys(master=LocalMasterKey(secrets.token_bytes(32), "LIFECYCLE_MASTER_KEY"))
    with pytest.raises(MasterKeyMismatch, match="from LIFECYCLE_MASTER_KEY does not open"):
        other.load_sync(table, [sealed["email"]])
