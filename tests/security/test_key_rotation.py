"""Finding 3 (issue 26): after `lifecycle keys rotate`, an erased subject got a live data key again.
Its destroyed rows are filed under the hash of the ring's earlier key, and key creation looked up
the current hash only. On the real PostgreSQL: a subject destroyed under any hash of the ring
never gets a key again, by either the sync (SDK, key service) or the async (worker) path."""

from __future__ import annotations

import asyncio
import secrets

import psycopg

from lifecycle.core.crypto import ERASED, LocalMasterKey
from lifecycle.core.datakeys import DataKeys, check_master_key
from lifecycle.core.keys import Keyring


def test_a_subject_destroyed_before_a_rotation_never_gets_a_key_again(settings):
    wrapper = LocalMasterKey(secrets.token_bytes(32), "test")
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        check_master_key(conn, wrapper)

    async def destroy_under_the_old_key() -> None:
        async with await psycopg.AsyncConnection.connect(settings.postgres_dsn) as conn:
            erased = ["acc-erased", "vis-erased"]
            await DataKeys(wrapper, Keyring((old,))).destroy(conn, erased, ["contact", "identity"])
            await conn.commit()

    asyncio.run(destroy_under_the_old_key())
    rotated = Keyring((new, old))
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        keys = DataKeys(wrapper, rotated)
        prepared = keys.prepare_sync(conn, [("acc-erased", "contact"), ("vis-erased", "identity"),
                                            ("acc-live", "contact")])
        assert keys.seal(prepared, "marie@example.org", "acc-erased", "contact", "email") == ERASED
        assert keys.seal(prepared, "x", "vis-erased", "identity", "ip") == ERASED
        assert keys.seal(prepared, "x", "acc-live", "contact", "email").startswith("lc1:")
        # Filed under the current hash too now, as destroyed: a fresh process finds it so at once.
        row = conn.execute("SELECT wrapped IS NULL, destroyed_at IS NOT NULL FROM data_keys WHERE subject_hash = %s "
                           "AND category = 'contact'", (rotated.pseudonym("acc-erased"),)).fetchone()
        assert row == (True, True)

    async def the_worker_path() -> str:
        async with await psycopg.AsyncConnection.connect(settings.postgres_dsn) as conn:
            keys = DataKeys(wrapper, rotated)
            prepared = await keys.prepare(conn, [("vis-erased", "contact")])
            await conn.commit()
            return keys.seal(prepared, "x", "vis-erased", "contact", "email")

    assert asyncio.run(the_worker_path()) == ERASED
