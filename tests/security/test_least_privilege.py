"""Finding 5 (issue 26): every connector in docker-compose.yml mounted every secret (all of
/run/lifecycle: the master key, the proof key, the hash key, every role's password), so one
compromised connector could sign for any store or issue certificates. Now the provisioning step
hands each party a folder of its own (lifecycle/handout.py) and each service mounts its folder alone.
Checked twice: in the compose file, and by running the hand-out against the real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import yaml

from lifecycle.core.config import PROJECT_ROOT
from lifecycle.core.storekeys import AckSigner

WORKER_ONLY = {"LIFECYCLE_MASTER_KEY_FILE", "LIFECYCLE_ORDER_KEY_FILE", "LIFECYCLE_HTTP_TOKENS_FILE"}
FRONT_TOO = {"LIFECYCLE_MASTER_KEY_FILE", "LIFECYCLE_HTTP_TOKENS_FILE"}


def _services() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]


def _secret_mounts(svc: dict) -> list:
    return [v for v in svc.get("volumes", []) if (v["source"] if isinstance(v, dict) else v.split(":")[0])
            == "lifecycle-secrets"]


def test_each_compose_service_mounts_its_own_secrets_alone():
    services = _services()
    for name, svc in services.items():
        mounts = _secret_mounts(svc)
        env = set(svc.get("environment") or {})
        if name == "hash-key":  # the provisioning step: it makes the keys, then hands them out
            continue
        if name.startswith("connector-"):
            party = "store-" + name.removeprefix("connector-")
        elif name in ("worker", "certificates", "front"):
            party = name
        else:
            assert mounts == [], f"{name} mounts secrets it has no use for"
            continue
        assert len(mounts) == 1 and isinstance(mounts[0], dict), name
        assert mounts[0]["volume"]["subpath"] == f"parties/{party}" and mounts[0]["read_only"] is True, name
        if party == "front":  # it seals (the master key) and takes ingest tokens; it signs no order
            assert not env & (WORKER_ONLY - FRONT_TOO), f"{name} names the worker's keys"
        elif party != "worker":
            assert not env & WORKER_ONLY, f"{name} names the worker's keys: {env & WORKER_ONLY}"
        if party != "certificates":
            assert "LIFECYCLE_PROOF_KEY_FILE" not in env, f"{name} names the proof key"


def test_the_hand_out_gives_each_party_its_own_secrets(settings, tmp_path):
    parties = tmp_path / "parties"
    tokens = {"LIFECYCLE_HTTP_TOKENS_FILE": str(tmp_path / "http-tokens")}  # one token per scope, made by init
    out = subprocess.run([sys.executable, "-m", "lifecycle", "keys", "init", "--hand-out", str(parties)],
                         env={**os.environ, **settings.to_env(), **tokens}, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    files = {p.relative_to(parties).as_posix() for p in parties.rglob("*") if p.is_file()}
    stores = settings.erasure_stores
    assert {f for f in files if f.startswith("worker/")} >= {"worker/master.key", "worker/order.key", "worker/hash.key",
                                                            "worker/order.pub", "worker/postgres-roles/worker.password"}
    assert {f for f in files if f.startswith("certificates/")} == {"certificates/proof.key",
                                                                  "certificates/postgres-roles/reader.password"}
    assert {f for f in files if f.startswith("front/")} == {"front/hash.key", "front/master.key", "front/http-tokens",
                                                           "front/postgres-roles/front.password"}
    handed = [line.split() for line in (parties / "front" / "http-tokens").read_text().splitlines()]
    every = [line.split() for line in (tmp_path / "http-tokens").read_text().splitlines()]
    assert handed == [p for p in every if p[0] == "ingest"] and len(every) == 3  # read and keys stay with the worker
    for store in stores:
        assert {f for f in files if f.startswith(f"store-{store}/")} == {
            f"store-{store}/hash.key", f"store-{store}/order.pub", f"store-{store}/store.key",
            f"store-{store}/postgres-roles/store-{store}.password"}, store
    assert not any("proof.key" in f for f in files if not f.startswith("certificates/"))
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in parties.rglob("*") if p.is_file())
    # Each store's key is its own: the database keeps the public half, which matches the store's file.
    with psycopg.connect(settings.postgres_dsn) as conn:
        public = dict(conn.execute("SELECT store, public_key FROM store_keys WHERE wrapped IS NULL").fetchall())
    for store in stores:
        signer = AckSigner((parties / f"store-{store}" / "store.key").read_text(), store)
        assert bytes(public[store]) == signer.public
    again = subprocess.run([sys.executable, "-m", "lifecycle", "keys", "init", "--hand-out", str(parties)],
                           env={**os.environ, **settings.to_env(), **tokens}, capture_output=True, timeout=120)
    assert again.returncode == 0  # run twice: nothing overwritten, no key changed
    with psycopg.connect(settings.postgres_dsn) as conn:
        assert dict(conn.execute("SELECT store, public_key FROM store_keys").fetchall()) == public
