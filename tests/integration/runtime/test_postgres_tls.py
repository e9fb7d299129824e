"""The pipeline against a PostgreSQL reachable over TLS only: the worker and the postgres store
connect with `sslmode=verify-full` and the CA given in the DSN, a plain-text connection is
refused, and events, erasure and proof go through as usual. The wheel's PostgreSQL has no
OpenSSL, so a TLS front speaking PostgreSQL's SSLRequest negotiation stands before it
(tests/tls_proxy.py)."""

from __future__ import annotations

import dataclasses
import json
import ssl

import psycopg
import pytest
import trustme
from psycopg.conninfo import make_conninfo

from lifecycle.embedded.postgres import EmbeddedPostgres
from lifecycle.supervisor import http_get
from tests.fix_servers import ChildProcess, WorkerProcess
from tests.helpers import HOUR, T0, event, wait_for
from tests.integration.erasure.test_erasure import _emit
from tests.tls_proxy import PostgresTlsFront


def test_the_pipeline_runs_on_a_tls_only_postgres(settings, tmp_path):
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pg = EmbeddedPostgres(tmp_path / "pg", tmp_path / "pg.log", fast=True)
    pg.start()
    worker = store = None
    try:
        with PostgresTlsFront(pg.port, server) as front:
            base = make_conninfo(pg.dsn(), port=str(front.port))
            dsn = make_conninfo(base, sslmode="verify-full", sslrootcert=str(ca_file))
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(make_conninfo(base, sslmode="disable"), connect_timeout=5).close()
            other_ca = trustme.CA()
            wrong_ca = tmp_path / "other-ca.pem"
            other_ca.cert_pem.write_to_path(str(wrong_ca))
            with pytest.raises(psycopg.OperationalError):  # verify-full checks the certificate
                psycopg.connect(make_conninfo(base, sslmode="verify-full", sslrootcert=str(wrong_ca)),
                                connect_timeout=5).close()

            own = dataclasses.replace(settings, postgres_dsn=dsn, erasure_stores=("postgres",))
            worker = WorkerProcess(own, tmp_path / "worker.log")
            store = ChildProcess(own, tmp_path / "connector-postgres.log", ["connector", "postgres"])
            worker.start()
            store.spawn()
            _emit(own, event("account.registered", T0, account="acc-tls", email="tls@example.test", first_name="T",
                             last_name="L"),
                  event("account.closed", T0 + HOUR, account="acc-tls"))

            def complete():
                status, body = http_get(worker.url("/v1/accounts/acc-tls/erasure"), token=worker.settings.read_token)
                return status == 200 and json.loads(body)["erasures"][0]["state"] == "complete"

            wait_for(complete, deadline_s=60, what="the erasure over TLS")
            with psycopg.connect(dsn) as conn:
                assert conn.pgconn.ssl_in_use
                assert conn.execute("SELECT count(*) FROM erasure_proofs").fetchone()[0] == 1
            assert front.refused_plain >= 1
            # The processes stop while the front still stands. Stopped after it, they held their
            # connections open through its stop, which outlived its 10 s join and closed them
            # during the next test, whose setup then failed on the unclosed sockets.
            _stop(store, worker)
    finally:
        _stop(store, worker)
        pg.stop()


def _stop(*processes: ChildProcess | None) -> None:
    for process in processes:
        if process is not None:
            process.stop()
